//! `crashtrace symbolize`: the crash symbolizer as an `addr2line`-style
//! command over one ELF file.
//!
//! It gives the symbolizer's answers without a crash, root or BPF, so they
//! can be checked against binutils, elfutils and LLVM on any binary, and it
//! lets tools that drive a symbolizer as a co-process (one address in, one
//! answer out, as with `llvm-symbolizer`) use crashtrace's: each answer is
//! flushed before more input is waited for.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    path::Path,
};

use anyhow::Context as _;

use crate::{
    frontends::cli::{SymbolizeArgs, parse_address},
    symbolize::{SymbolFrame, Symbolizer},
};

/// Bytes of input read at a time.
const INPUT_BUFFER: usize = 64 * 1024;

/// How answers are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `addr2line -f -i`: FUNCTION and FILE:LINE lines per frame.
    Text,
    /// One JSON object per address.
    Json,
}

/// `crashtrace symbolize`.
pub fn run(args: SymbolizeArgs) -> anyhow::Result<u8> {
    let mut symbolizer = Symbolizer::new(args.debug_dirs);
    // A file that cannot be read or is not ELF fails the command at once
    // rather than answering "??" for every address.
    // The error names the file and why (its source is part of its message).
    symbolizer
        .build_id(&args.exe)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let stdout = io::BufWriter::new(io::stdout().lock());
    let result = if args.addrs.is_empty() {
        symbolize_lines(
            &mut symbolizer,
            &args.exe,
            format,
            io::stdin().lock(),
            stdout,
        )
    } else {
        symbolize_addrs(&mut symbolizer, &args.exe, format, &args.addrs, stdout)
    };
    match result {
        // Whoever reads the answers has gone (`| head`): nothing left to do.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        result => result.map(|()| 0).context("writing answers"),
    }
}

/// Answers each address of `addrs` in turn.
pub fn symbolize_addrs(
    symbolizer: &mut Symbolizer,
    exe: &Path,
    format: Format,
    addrs: &[u64],
    mut out: impl Write,
) -> io::Result<()> {
    let mut batch = symbolizer.batch();
    for &addr in addrs {
        answer(&mut batch, exe, format, addr, &mut out)?;
    }
    out.flush()
}

/// Answers the addresses of `input`, one per line. Blank lines are skipped;
/// a line that is not an address is answered as unknown (and reported on
/// stderr), so that every other line still gets exactly one answer.
///
/// Answers are flushed whenever the input read so far is used up, before
/// waiting for more: a program that writes one address and waits for its
/// answer gets it, and a file of addresses is answered in large writes.
/// The addresses of one read form a batch, in which the file is checked
/// against the disk once (see [`Symbolizer::batch`]).
pub fn symbolize_lines(
    symbolizer: &mut Symbolizer,
    exe: &Path,
    format: Format,
    input: impl Read,
    mut out: impl Write,
) -> io::Result<()> {
    let mut input = BufReader::with_capacity(INPUT_BUFFER, input);
    let mut line = String::new();
    loop {
        let mut batch = symbolizer.batch();
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                return out.flush();
            }
            let text = line.trim();
            if !text.is_empty() {
                match parse_address(text) {
                    Ok(addr) => answer(&mut batch, exe, format, addr, &mut out)?,
                    Err(e) => {
                        eprintln!("crashtrace: {e}");
                        match format {
                            Format::Text => write_text(&mut out, &[])?,
                            Format::Json => write_json_error(&mut out, text, &e)?,
                        }
                    }
                }
            }
            if input.buffer().is_empty() {
                break;
            }
        }
        drop(batch);
        out.flush()?;
    }
}

/// Symbolizes `addr` and writes its answer.
fn answer(
    symbolizer: &mut Symbolizer,
    exe: &Path,
    format: Format,
    addr: u64,
    out: &mut impl Write,
) -> io::Result<()> {
    let frames = match symbolizer.symbolize_file_address(exe, addr) {
        Ok(s) => s.frames,
        Err(e) => {
            eprintln!("crashtrace: {addr:#x}: {e}");
            Vec::new()
        }
    };
    match format {
        Format::Text => write_text(out, &frames),
        Format::Json => write_json(out, addr, &frames),
    }
}

/// `addr2line -f -i` lines for one address: FUNCTION, then FILE:LINE, per
/// frame; `??` and `??:0` for what is unknown, one such pair for an address
/// nothing is known about.
pub fn write_text(out: &mut impl Write, frames: &[SymbolFrame]) -> io::Result<()> {
    if frames.is_empty() {
        return out.write_all(b"??\n??:0\n");
    }
    for frame in frames {
        writeln!(
            out,
            "{}\n{}:{}",
            frame.function.as_deref().unwrap_or("??"),
            frame.file.as_deref().unwrap_or("??"),
            frame.line.unwrap_or(0)
        )?;
    }
    Ok(())
}

/// [`write_text`] into a string.
pub fn render_text(frames: &[SymbolFrame]) -> String {
    let mut text = Vec::new();
    write_text(&mut text, frames).expect("writing to memory cannot fail");
    String::from_utf8(text).expect("names are UTF-8")
}

/// One JSON line: `{"address":"0x..","frames":[...]}`.
pub fn write_json(out: &mut impl Write, addr: u64, frames: &[SymbolFrame]) -> io::Result<()> {
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        address: String,
        frames: &'a [SymbolFrame],
    }
    let answer = Answer {
        address: format!("{addr:#x}"),
        frames,
    };
    serde_json::to_writer(&mut *out, &answer).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// [`write_json`] into a string.
pub fn render_json(addr: u64, frames: &[SymbolFrame]) -> String {
    let mut text = Vec::new();
    write_json(&mut text, addr, frames).expect("writing to memory cannot fail");
    String::from_utf8(text).expect("JSON is UTF-8")
}

/// One JSON line for an input line that is not an address:
/// `{"input":"..","error":"..","frames":[]}`.
fn write_json_error(out: &mut impl Write, input: &str, error: &str) -> io::Result<()> {
    out.write_all(render_json_error(input, error).as_bytes())
}

/// One JSON line for an input line that is not an address:
/// `{"input":"..","error":"..","frames":[]}`.
pub fn render_json_error(input: &str, error: &str) -> String {
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        input: &'a str,
        error: &'a str,
        frames: [SymbolFrame; 0],
    }
    let answer = Answer {
        input,
        error,
        frames: [],
    };
    let mut line = serde_json::to_string(&answer).expect("plain data serializes");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use std::{
        cell::RefCell,
        io::{BufReader, Read},
        path::PathBuf,
        process::Command,
        rc::Rc,
    };

    use object::{Object, ObjectSymbol};

    use super::*;

    const SOURCE: &str = r#"volatile int counter;
__attribute__((noinline)) void leaf(void) { /* MARK:leaf */
    counter++;
}
__attribute__((noinline)) int middle(int x) { /* MARK:middle */
    leaf();
    return x + counter;
}
int main(int argc, char **argv) { (void)argv; return middle(argc); }
"#;

    /// A C program built with `cc -g`, in a directory removed on drop.
    struct Program {
        dir: PathBuf,
        exe: PathBuf,
    }

    impl Program {
        fn build(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "crashtrace-symbolize-cmd-{}-{name}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            let src = dir.join("prog.c");
            std::fs::write(&src, SOURCE).expect("write source");
            let exe = dir.join("prog");
            let out = Command::new("cc")
                .args(["-g", "-O0", "-o"])
                .arg(&exe)
                .arg(&src)
                .output()
                .expect("run cc");
            assert!(
                out.status.success(),
                "cc failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Self { dir, exe }
        }

        fn symbol(&self, name: &str) -> u64 {
            let data = std::fs::read(&self.exe).expect("read binary");
            let file = object::File::parse(&*data).expect("parse binary");
            file.symbols()
                .find(|s| s.name() == Ok(name))
                .unwrap_or_else(|| panic!("no symbol {name}"))
                .address()
        }
    }

    impl Drop for Program {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn line_of(marker: &str) -> u32 {
        let index = SOURCE.lines().position(|l| l.contains(marker)).unwrap();
        u32::try_from(index + 1).unwrap()
    }

    fn symbolizer() -> Symbolizer {
        Symbolizer::new(Vec::new()).with_debuginfod(None)
    }

    #[test]
    fn answers_lines_like_addr2line() {
        let prog = Program::build("text");
        let (leaf, middle) = (prog.symbol("leaf"), prog.symbol("middle"));
        let input = format!("{leaf:#x}\n\nnot-an-address\n{middle:x}\n0\n");
        let mut out = Vec::new();
        symbolize_lines(
            &mut symbolizer(),
            &prog.exe,
            Format::Text,
            input.as_bytes(),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8, "{text}");
        assert_eq!(lines[0], "leaf");
        assert!(lines[1].ends_with(&format!("prog.c:{}", line_of("MARK:leaf"))));
        assert_eq!(lines[2..4], ["??", "??:0"], "bad line answered as unknown");
        assert_eq!(lines[4], "middle");
        assert!(lines[5].ends_with(&format!("prog.c:{}", line_of("MARK:middle"))));
        assert_eq!(lines[6..8], ["??", "??:0"], "address 0 is in no function");
    }

    #[test]
    fn json_has_one_object_per_address() {
        let prog = Program::build("json");
        let leaf = prog.symbol("leaf");
        let mut out = Vec::new();
        symbolize_addrs(
            &mut symbolizer(),
            &prog.exe,
            Format::Json,
            &[leaf, 0],
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let values: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(values.len(), 2, "{text}");
        assert_eq!(values[0]["address"], format!("{leaf:#x}"));
        let frame = &values[0]["frames"][0];
        assert_eq!(frame["function"], "leaf");
        assert!(frame["file"].as_str().unwrap().ends_with("prog.c"));
        assert_eq!(frame["line"], line_of("MARK:leaf"));
        assert!(frame["column"].is_number() || frame["column"].is_null());
        assert_eq!(frame["inlined"], false);
        assert_eq!(values[1]["address"], "0x0");
        assert_eq!(values[1]["frames"], serde_json::json!([]));
    }

    /// Input that hands over one line per read and checks, before handing
    /// over the next, that the previous line's answer was written out and
    /// flushed.
    struct OneLineAtATime {
        lines: Vec<String>,
        next: usize,
        sink: Rc<RefCell<Sink>>,
    }

    #[derive(Default)]
    struct Sink {
        bytes: Vec<u8>,
        flushed: usize,
    }

    struct SinkWriter(Rc<RefCell<Sink>>);

    impl Write for SinkWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            let mut sink = self.0.borrow_mut();
            sink.flushed = sink.bytes.len();
            Ok(())
        }
    }

    impl Read for OneLineAtATime {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.next > 0 {
                let sink = self.sink.borrow();
                let answered = String::from_utf8_lossy(&sink.bytes[..sink.flushed])
                    .lines()
                    .count();
                assert_eq!(
                    answered,
                    2 * self.next,
                    "line {} was not answered before more input was read",
                    self.next
                );
            }
            let Some(line) = self.lines.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            buf[..line.len()].copy_from_slice(line.as_bytes());
            Ok(line.len())
        }
    }

    #[test]
    fn each_line_is_answered_before_the_next_is_read() {
        let prog = Program::build("interactive");
        let sink = Rc::new(RefCell::new(Sink::default()));
        let input = OneLineAtATime {
            lines: ["leaf", "middle", "main"]
                .map(|f| format!("0x{:x}\n", prog.symbol(f)))
                .into(),
            next: 0,
            sink: Rc::clone(&sink),
        };
        symbolize_lines(
            &mut symbolizer(),
            &prog.exe,
            Format::Text,
            BufReader::new(input),
            SinkWriter(Rc::clone(&sink)),
        )
        .unwrap();
        let text = String::from_utf8(sink.borrow().bytes.clone()).unwrap();
        let functions: Vec<&str> = text.lines().step_by(2).collect();
        assert_eq!(functions, ["leaf", "middle", "main"]);
    }

    #[test]
    fn unknown_parts_print_as_question_marks() {
        let frames = [
            SymbolFrame {
                function: Some("inner".into()),
                file: Some("a.c".into()),
                line: Some(3),
                column: Some(5),
                inlined: true,
            },
            SymbolFrame {
                function: None,
                file: None,
                line: None,
                column: None,
                inlined: false,
            },
        ];
        assert_eq!(render_text(&frames), "inner\na.c:3\n??\n??:0\n");
        assert_eq!(render_text(&[]), "??\n??:0\n");
        assert_eq!(
            render_json_error("zz", "bad"),
            "{\"input\":\"zz\",\"error\":\"bad\",\"frames\":[]}\n"
        );
        assert_eq!(
            render_json(0x1139, &frames[..1]),
            "{\"address\":\"0x1139\",\"frames\":[{\"function\":\"inner\",\"file\":\"a.c\",\
             \"line\":3,\"column\":5,\"inlined\":true}]}\n"
        );
    }
}
