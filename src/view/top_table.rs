//! The table `profiler top` shows: the hottest functions of the last window, one line each,
//! cut to the terminal's size. Plain text; the terminal codes are the caller's.

use std::fmt::Write as _;

use crate::profile::Profile;
use crate::summary::{function_counts, identity, percent};

/// The column the table is sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// Samples where the CPU was in the function (perf top's default).
    Own,
    /// Samples with the function anywhere on the stack.
    Total,
    /// Function name, A to Z.
    Name,
}

/// The table for `profile` as at most `rows` lines of at most `cols` characters: a status
/// line, the column headings, then one line per function.
pub fn render(profile: &Profile, sort: SortBy, rows: usize, cols: usize) -> Vec<String> {
    let total = profile.total_samples();
    let mut functions: Vec<(String, (u64, u64))> =
        function_counts(profile, identity).into_iter().collect();
    functions.sort_by(|(a, (a_own, a_total)), (b, (b_own, b_total))| {
        let by = match sort {
            SortBy::Own => b_own.cmp(a_own).then(b_total.cmp(a_total)),
            SortBy::Total => b_total.cmp(a_total).then(b_own.cmp(a_own)),
            SortBy::Name => std::cmp::Ordering::Equal,
        };
        by.then_with(|| a.cmp(b))
    });
    let processes: std::collections::HashSet<u32> = profile.samples.iter().map(|s| s.pid).collect();
    let secs = (profile.duration_ns as f64 / 1e9).max(0.001);
    let mark = |key: SortBy| if key == sort { "*" } else { " " };
    let mut lines = vec![
        format!(
            "profiler top: {total} samples in {secs:.1} s, {} processes   \
             (q quit, s self, t total, n name)",
            processes.len()
        ),
        format!(
            "{}  SELF%{} TOTAL%  SAMPLES  FUNCTION{}",
            mark(SortBy::Own),
            mark(SortBy::Total),
            mark(SortBy::Name)
        ),
    ];
    for (name, (own, all)) in functions.into_iter().take(rows.saturating_sub(2)) {
        let mut line = String::new();
        let _ = write!(
            line,
            "  {:>5.1}%  {:>5.1}%  {own:>7}  {name}",
            percent(own, total),
            percent(all, total)
        );
        lines.push(line);
    }
    lines.truncate(rows);
    for line in &mut lines {
        if let Some((cut, _)) = line.char_indices().nth(cols) {
            line.truncate(cut);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::tree::tests::profile;

    #[test]
    fn hottest_first_and_cut_to_size() {
        let p = profile(&[(&["main", "hot"], 90), (&["main", "cold"], 10)]);
        let lines = render(&p, SortBy::Own, 10, 200);
        assert!(lines[2].ends_with("hot (x)"), "{lines:?}");
        assert!(lines[2].contains(" 90.0%"), "{lines:?}");
        let by_total = render(&p, SortBy::Total, 3, 200);
        assert_eq!(by_total.len(), 3);
        assert!(by_total[2].ends_with("main (x)"), "{by_total:?}");
        let narrow = render(&p, SortBy::Name, 10, 12);
        assert!(narrow.iter().all(|l| l.chars().count() <= 12));
        assert!(narrow[2].starts_with("  "), "{narrow:?}");
    }
}
