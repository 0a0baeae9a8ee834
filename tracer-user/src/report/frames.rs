//! Frames: from addresses to modules, functions and source lines.

use std::path::PathBuf;

use super::Frame;
use crate::{
    events::Mapping,
    support::locate::{self, LocateError, Located},
    symbolize::{ModuleRef, Symbolizer},
    unwind::RawFrame,
};

/// Frames for `raw_frames`: module, offset and build-id from the mapping
/// each address falls in, function, file and line from its file
/// (`files[i]` for `mappings[i]`), inlined calls as frames of their own.
pub(crate) fn symbolize_frames(
    symbolizer: &mut Symbolizer,
    raw_frames: &[RawFrame],
    mappings: &[Mapping],
    files: &[Option<PathBuf>],
    diagnostics: &mut Vec<String>,
) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(raw_frames.len());
    for raw in raw_frames {
        let index = mappings
            .iter()
            .position(|m| raw.address >= m.start && raw.address < m.end);
        let mapping = index.map(|i| &mappings[i]);
        let mut frame = Frame::unknown(raw.address);
        let Some(mapping) = mapping else {
            frames.push(frame);
            continue;
        };
        frame.module = Some(module_name(mapping));
        frame.offset = Some(format!(
            "{:#x}",
            raw.address - mapping.start + mapping.file_offset
        ));
        let Some(path) = index.and_then(|i| files[i].clone()) else {
            frames.push(frame);
            continue;
        };
        let module = ModuleRef {
            path: &path,
            start: mapping.start,
            file_offset: mapping.file_offset,
        };
        match symbolizer.symbolize(&module, raw.address, raw.is_return) {
            Ok(sym) if !sym.frames.is_empty() => {
                frame.build_id = sym.build_id.as_deref().map(str::to_owned);
                for s in sym.frames {
                    frames.push(Frame {
                        function: s.function.as_deref().map(str::to_owned),
                        file: s.file.as_deref().map(str::to_owned),
                        line: s.line,
                        column: s.column,
                        inlined: s.inlined,
                        ..frame.clone()
                    });
                }
                continue;
            }
            Ok(sym) => {
                frame.build_id = sym.build_id.as_deref().map(str::to_owned);
                diagnostics.push(format!(
                    "no symbol covers {} in {}",
                    frame.offset.as_deref().unwrap_or("?"),
                    path.display()
                ));
            }
            Err(e) => diagnostics.push(format!("cannot symbolize {}: {e}", frame.address)),
        }
        frames.push(frame);
    }
    frames
}

fn module_name(m: &Mapping) -> String {
    match (&m.path, m.vdso) {
        (Some(p), _) => p.display().to_string(),
        (None, true) => "[vdso]".into(),
        (None, false) => "[anonymous]".into(),
    }
}

/// The mapping's file, open, or a diagnostic saying why not.
pub(crate) fn locate_file(pid: u32, m: &Mapping, diagnostics: &mut Vec<String>) -> Option<Located> {
    if m.path_truncated
        && let Some(path) = &m.path
    {
        diagnostics.push(format!(
            "path of {} was truncated by the kernel",
            path.display()
        ));
    }
    match locate::locate(pid, m) {
        Ok(located) => Some(located),
        Err(LocateError::NoPath) => None,
        Err(e) => {
            diagnostics.push(format!("{e}; its frames are left unsymbolized"));
            None
        }
    }
}
