//! Encoders: turning a symbolized [`Profile`] into bytes, one format each (folded, pprof,
//! OTLP, and an SVG flame graph drawn by `crate::view`); the wire messages are `crate::proto`'s.
//!
//! This module owns the choice of format (by name or by output path) and the dispatch to the
//! encoders. It does not build profiles (that is `crate::reporter`); encoders write to a
//! caller-supplied [`Write`]. Sending is the exporter thread's (`crate::exporter`).

pub mod folded;
pub mod otlp;
pub mod pprof;
pub mod svg;

use std::io::{self, Write};
use std::path::Path;

use crate::profile::Profile;

/// `service.name` of profiles this profiler writes or sends, unless told otherwise.
pub const SERVICE_NAME: &str = "profiler";

/// An output format for a profile written to a file or stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// Folded stacks, one `thread;root;...;leaf COUNT` line per distinct stack.
    Folded,
    /// pprof's `profile.proto`, gzip-compressed.
    Pprof,
    /// OTLP `ProfilesData` (profiles v1development), binary protobuf.
    Otlp,
    /// An interactive flame graph (SVG with its script inside).
    Svg,
}

impl OutputFormat {
    /// Every format, in the order a `--help` text should list them.
    pub const ALL: [OutputFormat; 4] = [
        OutputFormat::Folded,
        OutputFormat::Pprof,
        OutputFormat::Otlp,
        OutputFormat::Svg,
    ];

    /// Parses a format name as given on the command line (`folded`, `pprof`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|format| format.name() == name)
    }

    /// Guesses the format from an output path's extension (case-insensitive): `.folded` and
    /// `.txt` are folded stacks; `.svg` is a flame graph; `.pb`, `.pb.gz` and `.pprof` are pprof. Anything else is `None`,
    /// so the caller can ask for an explicit format rather than guess.
    pub fn from_path(path: &Path) -> Option<Self> {
        let file_name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        const SUFFIXES: [(&str, OutputFormat); 7] = [
            (".svg", OutputFormat::Svg),
            (".otlp", OutputFormat::Otlp),
            (".folded", OutputFormat::Folded),
            (".txt", OutputFormat::Folded),
            (".pb.gz", OutputFormat::Pprof),
            (".pb", OutputFormat::Pprof),
            (".pprof", OutputFormat::Pprof),
        ];
        SUFFIXES
            .into_iter()
            .find(|(suffix, _)| file_name.len() > suffix.len() && file_name.ends_with(suffix))
            .map(|(_, format)| format)
    }

    /// The name accepted by [`OutputFormat::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Folded => "folded",
            OutputFormat::Pprof => "pprof",
            OutputFormat::Otlp => "otlp",
            OutputFormat::Svg => "svg",
        }
    }
}

/// Writes `profile` to `out` in `format`. Only `out`'s own errors are returned: encoding cannot
/// fail.
pub fn write_profile(
    format: OutputFormat,
    profile: &Profile,
    out: &mut dyn Write,
) -> io::Result<()> {
    match format {
        OutputFormat::Folded => folded::write(profile, out),
        OutputFormat::Pprof => pprof::write(profile, out),
        OutputFormat::Otlp => otlp::write(
            profile,
            &otlp::OtlpContext::for_profile(profile, SERVICE_NAME),
            out,
        ),
        OutputFormat::Svg => svg::write(profile, out),
    }
}

#[cfg(test)]
mod python_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for format in OutputFormat::ALL {
            assert_eq!(OutputFormat::from_name(format.name()), Some(format));
        }
        assert_eq!(OutputFormat::from_name("svg"), Some(OutputFormat::Svg));
        assert_eq!(OutputFormat::from_name("png"), None);
        assert_eq!(OutputFormat::from_name("Folded"), None);
        assert_eq!(OutputFormat::from_name(""), None);
    }

    #[test]
    fn format_from_path() {
        let cases = [
            ("out.folded", Some(OutputFormat::Folded)),
            ("/tmp/x/OUT.TXT", Some(OutputFormat::Folded)),
            ("profile.pb", Some(OutputFormat::Pprof)),
            ("profile.pb.gz", Some(OutputFormat::Pprof)),
            ("profile.PB.GZ", Some(OutputFormat::Pprof)),
            ("cpu.pprof", Some(OutputFormat::Pprof)),
            ("dir.pprof/out.svg", Some(OutputFormat::Svg)),
            ("out.png", None),
            ("profile.gz", None),
            ("profile", None),
            (".txt", None),
            ("", None),
        ];
        for (path, expected) in cases {
            assert_eq!(OutputFormat::from_path(Path::new(path)), expected, "{path}");
        }
    }

    #[test]
    fn write_profile_dispatches() {
        let profile = Profile::default();
        let mut folded = Vec::new();
        write_profile(OutputFormat::Folded, &profile, &mut folded).expect("write to a Vec");
        assert!(folded.is_empty());

        let mut pprof = Vec::new();
        write_profile(OutputFormat::Pprof, &profile, &mut pprof).expect("write to a Vec");
        // gzip magic
        assert_eq!(&pprof[..2], &[0x1f, 0x8b]);
    }
}
