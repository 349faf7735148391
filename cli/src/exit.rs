//! Exit codes that scripts can rely on, and the one line an error prints.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success; also when the reader of a pipe leaves early (`joulectl get nodes \| head -1`) |
//! | 1 | any other error |
//! | 2 | usage: a flag, an argument or a resource kind that is not right (clap's own errors, an unknown KIND, a bad `-l` selector) |
//! | 3 | not found: the named resource does not exist (gRPC NOT_FOUND) |
//! | 4 | unreachable: no server answered, or none can serve now (a refused connection, UNAVAILABLE, DEADLINE_EXCEEDED) |
//! | 5 | unauthorized: the token is missing, wrong or expired (UNAUTHENTICATED, PERMISSION_DENIED) |
//! | 6 | invalid: the server refused the input (INVALID_ARGUMENT, OUT_OF_RANGE) |
//! | 7 | conflict: the cluster's state refuses the change (ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED: a model still in use, say) |
//!
//! This module owns the mapping from an error to its code and to its one line (with what to do,
//! where that is known). It never prints, except from the panic hook, which turns a panic into
//! one line too (and a broken pipe into a quiet exit 0).

use std::fmt;
use std::process::ExitCode;

/// What `joulectl --help` says about exit codes (kept in step with the table above).
pub const HELP: &str = "\
Exit codes:
  0  success (also when a pipe's reader leaves early: `joulectl get nodes | head -1`)
  1  any other error
  2  usage: a bad flag, argument, resource kind or -l selector
  3  not found: the named resource does not exist
  4  unreachable: no server answered, or none can serve now
  5  unauthorized: the token is missing, wrong or expired
  6  invalid: the server refused the input
  7  conflict: the cluster's state refuses the change (a model still in use, say)";

/// Why `joulectl` stopped, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    General = 1,
    Usage = 2,
    NotFound = 3,
    Unreachable = 4,
    Unauthorized = 5,
    Invalid = 6,
    Conflict = 7,
}

impl Code {
    /// The code of a gRPC status.
    pub fn from_grpc(c: tonic::Code) -> Self {
        use tonic::Code as G;
        match c {
            G::NotFound => Self::NotFound,
            G::Unavailable | G::DeadlineExceeded => Self::Unreachable,
            G::Unauthenticated | G::PermissionDenied => Self::Unauthorized,
            G::InvalidArgument | G::OutOfRange => Self::Invalid,
            G::AlreadyExists | G::FailedPrecondition | G::Aborted => Self::Conflict,
            _ => Self::General,
        }
    }

    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }

    /// What to do about it, where one thing is always worth saying.
    fn hint(self) -> Option<&'static str> {
        match self {
            Self::Unauthorized => {
                Some("the server refused the token: check --token / JOULE_TOKEN or your context")
            }
            Self::Unreachable => Some(
                "is it running? check --server / JOULE_SERVER (--worker for one worker) or your \
                 context; `joulectl cluster up` starts a cluster on this machine",
            ),
            _ => None,
        }
    }
}

/// An error that knows its exit code: a gRPC status, or a refusal made here (usage).
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A gRPC status: its code name, then the server's message ("NotFound: no model named x").
    pub fn status(s: &tonic::Status) -> Self {
        Self::new(
            Code::from_grpc(s.code()),
            format!("{:?}: {}", s.code(), s.message()),
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A usage error (exit code 2): a bad argument, found after clap parsed the flags.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Failure::new(Code::Usage, message).into()
}

/// A not-found error made here (exit code 3).
pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    Failure::new(Code::NotFound, message).into()
}

/// The exit code of `e`: the first cause in its chain that knows one.
pub fn code(e: &anyhow::Error) -> Code {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            // The reader of our stdout left (`| head`): what it wanted, it got.
            return Code::Ok;
        }
        if let Some(s) = cause.downcast_ref::<tonic::Status>() {
            return Code::from_grpc(s.code());
        }
        if let Some(c) = cause.downcast_ref::<joule_client::ConnectError>() {
            return match c {
                joule_client::ConnectError::Unreachable { .. } => Code::Unreachable,
                joule_client::ConnectError::Address(_) => Code::Usage,
            };
        }
        if cause.downcast_ref::<joule_client::AddressError>().is_some() {
            return Code::Usage;
        }
    }
    Code::General
}

/// Ends the process for `e` at once: its line on stderr (none for a reader that left), its code.
pub fn now(e: &anyhow::Error) -> ! {
    let c = code(e);
    if c != Code::Ok {
        eprintln!("{}", line(e));
    }
    std::process::exit(c as i32)
}

/// `error: ...` on one line, with what to do where that is known.
pub fn line(e: &anyhow::Error) -> String {
    let mut s = one_line(&format!("{e:#}"));
    if let Some(h) = code(e).hint()
        && !s.contains(h)
    {
        s.push_str("; ");
        s.push_str(h);
    }
    format!("error: {s}")
}

/// `s` with its line breaks folded into spaces (a server's message may span lines).
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Makes a panic one line and exit code 1 (never a backtrace), and a panic from printing to a
/// closed stdout (`println!` on a broken pipe) a quiet exit 0.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(Code::Ok as i32);
        }
        eprintln!(
            "error: internal error (a bug in joulectl; please report it): {}",
            one_line(&msg)
        );
        std::process::exit(Code::General as i32);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_keep_their_code_through_context() {
        let cases = [
            (tonic::Status::not_found("no model named x"), Code::NotFound),
            (
                tonic::Status::unavailable("no replica answered"),
                Code::Unreachable,
            ),
            (
                tonic::Status::unauthenticated("bad token"),
                Code::Unauthorized,
            ),
            (tonic::Status::permission_denied("no"), Code::Unauthorized),
            (
                tonic::Status::invalid_argument("spec.replicas"),
                Code::Invalid,
            ),
            (
                tonic::Status::failed_precondition("model in use"),
                Code::Conflict,
            ),
            (tonic::Status::already_exists("key id"), Code::Conflict),
            (tonic::Status::internal("oops"), Code::General),
        ];
        for (s, want) in cases {
            let e: anyhow::Error = Failure::status(&s).into();
            assert_eq!(code(&e), want, "{s:?}");
            let e = e.context("model/smollm2");
            assert_eq!(code(&e), want, "{s:?} under a context");
        }
        let e: anyhow::Error =
            Failure::status(&tonic::Status::not_found("no model named x")).into();
        assert_eq!(e.to_string(), "NotFound: no model named x");
        assert_eq!(Code::Conflict.exit_code(), ExitCode::from(7));
    }

    #[test]
    fn local_errors_have_codes_too() {
        assert_eq!(code(&usage("unknown resource type")), Code::Usage);
        assert_eq!(code(&not_found("no such key")), Code::NotFound);
        assert_eq!(code(&anyhow::anyhow!("something else")), Code::General);
        let pipe = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(code(&pipe), Code::Ok);
        let other = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(code(&other), Code::General);
    }

    #[test]
    fn an_error_is_one_line_that_says_what_to_do() {
        let e: anyhow::Error =
            Failure::status(&tonic::Status::unauthenticated("the token\nis not valid")).into();
        let l = line(&e.context("get nodes"));
        assert!(!l.contains('\n'), "{l}");
        assert!(
            l.starts_with("error: get nodes: Unauthenticated: the token is not valid"),
            "{l}"
        );
        assert!(
            l.contains("check --token / JOULE_TOKEN or your context"),
            "{l}"
        );
        let e: anyhow::Error = Failure::status(&tonic::Status::unavailable("down")).into();
        assert!(line(&e).contains("--server"), "{}", line(&e));
        assert_eq!(line(&anyhow::anyhow!("plain")), "error: plain");
    }

    #[test]
    fn the_help_lists_every_code() {
        for c in 0..=7 {
            assert!(
                HELP.contains(&format!("\n  {c}  ")),
                "exit code {c} missing from HELP"
            );
        }
    }
}
