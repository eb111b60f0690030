//! Where the export's extra HTTP headers come from besides the environment
//! ([`super::otel_env`]): `--header KEY=VALUE` arguments and a `--header-file` of `KEY: VALUE`
//! lines, which must not be readable by group or others since it holds credentials; and how
//! the sources combine (a later source replaces an earlier one's header of the same name).
//! Header values never appear in an error message. Checking names and values for HTTP is
//! [`super::TransportConfig::validate`]'s.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A header list: (name, value) in sending order.
pub type Headers = Vec<(String, String)>;

/// The largest header file read (a few headers, not a data file).
const MAX_FILE: u64 = 64 * 1024;

/// Parses the `number`th `--header` argument, `KEY=VALUE` (spaces around each removed).
pub fn parse_argument(argument: &str, number: usize) -> Result<(String, String), String> {
    match argument.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!(
            "invalid --header (the {}): expected KEY=VALUE, e.g. \"Authorization=Bearer TOKEN\"",
            ordinal(number)
        )),
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Reads a header file: `KEY: VALUE` lines; blank lines and lines starting with `#` are
/// skipped. Refused when group or others may read it.
pub fn read_file(path: &Path) -> Result<Headers, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        return Err(format!(
            "{shown} is readable by group or others (mode {mode:04o}); it holds credentials: \
             chmod 600 {shown}"
        ));
    }
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(format!(
            "{shown} is not a regular file of at most {MAX_FILE} bytes"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    parse_file(&text).map_err(|line| format!("{shown} line {line}: expected KEY: VALUE"))
}

/// Parses a header file's text; the error is the number of the first bad line.
fn parse_file(text: &str) -> Result<Headers, usize> {
    let mut headers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((key, value)) if !key.trim().is_empty() => {
                headers.push((key.trim().to_owned(), value.trim().to_owned()));
            }
            _ => return Err(i + 1),
        }
    }
    Ok(headers)
}

/// Combines header sources, lowest precedence first: a header named again (in any case)
/// replaces the earlier one.
pub fn merge(sources: impl IntoIterator<Item = Headers>) -> Headers {
    let mut merged: Headers = Vec::new();
    for (name, value) in sources.into_iter().flatten() {
        merged.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        merged.push((name, value));
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn arguments_are_key_equals_value_and_errors_hide_them() {
        assert_eq!(
            parse_argument(" Authorization = Bearer a=b ", 1),
            Ok(pair("Authorization", "Bearer a=b"))
        );
        for bad in ["Bearer-s3cret", "=s3cret", "Authorization: s3cret"] {
            let error = parse_argument(bad, 2).unwrap_err();
            assert!(
                error.contains("the 2nd") && !error.contains("s3cret"),
                "{error}"
            );
        }
        assert_eq!(ordinal(11), "11th");
        assert_eq!(ordinal(23), "23rd");
    }

    #[test]
    fn files_hold_key_colon_value_lines() {
        let text = "# credentials\n\nAuthorization: Bearer x:y\n x-scope-orgid :tenant \n";
        assert_eq!(
            parse_file(text),
            Ok(vec![
                pair("Authorization", "Bearer x:y"),
                pair("x-scope-orgid", "tenant")
            ])
        );
        assert_eq!(parse_file("a: 1\nno colon s3cret\n"), Err(2));
        assert_eq!(parse_file(": v\n"), Err(1));
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("profiler-headers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("headers");
        std::fs::write(&path, "Authorization: Bearer s3cret\n").unwrap();
        for (mode, ok) in [
            (0o644, false),
            (0o640, false),
            (0o604, false),
            (0o600, true),
            (0o400, true),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let read = read_file(&path);
            assert_eq!(read.is_ok(), ok, "mode {mode:o}: {read:?}");
            if let Err(error) = read {
                assert!(
                    error.contains("chmod 600") && !error.contains("s3cret"),
                    "{error}"
                );
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "Authorization Bearer s3cret\n").unwrap();
        let error = read_file(&path).unwrap_err();
        assert!(error.ends_with("line 1: expected KEY: VALUE") && !error.contains("s3cret"));
        assert!(read_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn later_sources_replace_earlier_headers_of_the_same_name() {
        let merged = merge([
            vec![pair("authorization", "env"), pair("x-a", "1")],
            vec![pair("Authorization", "file")],
            vec![pair("x-b", "2")],
        ]);
        assert_eq!(
            merged,
            [
                pair("x-a", "1"),
                pair("Authorization", "file"),
                pair("x-b", "2")
            ]
        );
    }
}
