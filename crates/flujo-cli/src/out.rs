//! Checked writes to stdout and stderr. `println!`/`eprintln!` panic when the reader has gone away
//! (`flujo lens show … | head -c1`: EPIPE); these writers stop writing instead and the command finishes
//! quietly, as other Unix tools do. A failure other than a broken pipe on stdout (a full disk behind
//! `> file`) is reported once on stderr and turns a successful exit code into 1.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Stdout's reader is gone: further output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Writing stdout failed for another reason than a broken pipe.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout and flushes it; a closed pipe is remembered and later output dropped.
pub fn stdout(text: &str) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
            stderr(&format!("error[output_error]: cannot write to stdout: {e}\n"));
        }
    }
}

/// Writes `text` to stderr, ignoring failures (there is nowhere left to report them).
pub fn stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// The exit code after output: a command that succeeded but could not write its output (other than to a
/// closed pipe) exits 1.
pub fn final_code(code: u8) -> u8 {
    if code == 0 && STDOUT_FAILED.load(Ordering::Relaxed) {
        1
    } else {
        code
    }
}

/// `print!` through [`stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::stdout(&format!($($arg)*)) };
}

/// `println!` through [`stdout`].
#[macro_export]
macro_rules! outln {
    () => { $crate::out::stdout("\n") };
    ($($arg:tt)*) => { $crate::out::stdout(&format!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    () => { $crate::out::stderr("\n") };
    ($($arg:tt)*) => { $crate::out::stderr(&format!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::out::stderr(&format!($($arg)*)) };
}
