//! `profiler unwind-info FILE [--addr ADDR]`: prints the unwind rows the profiler builds for an
//! executable (all of them, or the one covering ADDR), for bug reports about broken stacks.

use std::path::PathBuf;

use argh::FromArgs;

use super::Fatal;

#[derive(FromArgs, Debug)]
/// Print the unwind rows built from an executable's call-frame information (.eh_frame,
/// .debug_frame): all rows, or the row covering one address.
#[argh(subcommand, name = "unwind-info")]
pub struct UnwindInfoArgs {
    /// the executable or shared library
    #[argh(positional)]
    pub file: PathBuf,

    /// only the row covering this ELF virtual address (hex with 0x, or decimal), as nm and
    /// objdump print addresses
    #[argh(option, from_str_fn(parse_address))]
    pub addr: Option<u64>,
}

fn parse_address(value: &str) -> Result<u64, String> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    parsed.map_err(|_| format!("invalid address {value:?}: expected 0x-prefixed hex or decimal"))
}

pub fn run(args: UnwindInfoArgs) -> Result<i32, Fatal> {
    if !args.file.exists() {
        return Err(Fatal::usage(format!(
            "{}: no such file",
            args.file.display()
        )));
    }
    if args.file.is_dir() {
        return Err(Fatal::usage(format!(
            "{} is a directory",
            args.file.display()
        )));
    }
    let text =
        crate::cfi::describe(&args.file, args.addr).map_err(|e| Fatal::failure(e.to_string()))?;
    // A closed pipe (`| head`) just ends the output.
    let mut out = std::io::stdout().lock();
    match std::io::Write::write_all(&mut out, text.as_bytes())
        .and_then(|()| std::io::Write::flush(&mut out))
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Fatal::failure(format!("cannot write the output: {e}")))
        }
        _ => Ok(super::exit::OK),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_address;

    #[test]
    fn addresses() {
        assert_eq!(parse_address("0x1f"), Ok(31));
        assert_eq!(parse_address("31"), Ok(31));
        assert!(parse_address("0xzz").is_err());
        assert!(parse_address("-1").is_err());
    }
}
