//! JSON-lines sinks: every stored crash, one JSON object per line (the
//! stored form: the report plus the daemon's context), for log shippers.
//!
//! A file sink is opened for appending and reopened on reload, so log
//! rotation works with `copytruncate` or with a move followed by SIGHUP.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
#[error("cannot open sink {}: {error}", path.display())]
pub struct SinkError {
    path: PathBuf,
    error: io::Error,
}

pub struct JsonLinesSink {
    name: PathBuf,
    out: Box<dyn Write>,
}

impl JsonLinesSink {
    /// `-` is stdout; anything else a file, appended to.
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        let out: Box<dyn Write> = if path == Path::new("-") {
            Box::new(io::stdout())
        } else {
            Box::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| SinkError {
                        path: path.into(),
                        error,
                    })?,
            )
        };
        Ok(Self {
            name: path.into(),
            out,
        })
    }

    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Writes one line (without its newline) and flushes.
    pub fn write_line(&mut self, json: &str) -> io::Result<()> {
        let mut line = String::with_capacity(json.len() + 1);
        line.push_str(json);
        line.push('\n');
        self.out.write_all(line.as_bytes())?;
        self.out.flush()
    }
}
