//! `profiler diff`: compares two recordings (any format `report` reads): a differential flame
//! graph (widths from AFTER, colours from the change of each frame's share of all samples) and
//! the table of the functions whose share moved most.

use std::path::PathBuf;

use argh::FromArgs;

use super::report::write_to;
use super::{exit, Fatal};
use crate::encode::OutputFormat;
use crate::report::{self, Selection};
use crate::view::diff::{diff_graph, format_movers, movers};

#[derive(FromArgs, Debug)]
/// Compare two recorded profiles: print the functions whose share of the samples changed most
/// and write a differential flame graph (red: a larger share after, blue: a smaller one).
#[argh(subcommand, name = "diff")]
pub struct DiffArgs {
    /// the differential flame graph to write (default diff.svg)
    #[argh(option, short = 'o', default = "PathBuf::from(\"diff.svg\")")]
    pub output: PathBuf,

    /// how many functions the table shows (default 20)
    #[argh(option, short = 'n', default = "20")]
    pub top: usize,

    /// the profile before the change
    #[argh(positional)]
    pub before: PathBuf,

    /// the profile after the change
    #[argh(positional)]
    pub after: PathBuf,
}

pub fn run(args: DiffArgs) -> Result<i32, Fatal> {
    let all = Selection::default();
    let before = report::load(std::slice::from_ref(&args.before), &all).map_err(Fatal::failure)?;
    let after = report::load(std::slice::from_ref(&args.after), &all).map_err(Fatal::failure)?;
    if before.total_samples() == 0 || after.total_samples() == 0 {
        return Err(Fatal::failure(
            "nothing to compare: a profile has no samples",
        ));
    }
    let title = format!(
        "Differential flame graph: {} -> {}",
        args.before.display(),
        args.after.display()
    );
    write_to(&args.output, Some(OutputFormat::Svg), |_, w| {
        w.write_all(diff_graph(&before, &after, &title).as_bytes())
    })?;
    print!("{}", format_movers(&movers(&before, &after, args.top)));
    eprintln!(
        "profiler: wrote {} ({} samples before, {} after)",
        args.output.display(),
        before.total_samples(),
        after.total_samples()
    );
    Ok(exit::OK)
}
