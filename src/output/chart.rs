//! The lag chart that `replay --chart` and `audit --chart` write: how long copies took, per
//! destination, over the period, as an SVG file.
//!
//! - One panel per destination, stacked, all sharing the time axis: push time (UTC) across.
//! - Copy lag up a **log** scale, the same in every panel. Healthy copies take seconds and a late
//!   one tens of minutes or hours: on a linear axis one late copy flattens every healthy one onto
//!   the axis; on a log axis both are readable, and the window (a dashed line) sits mid-height.
//! - Copies with no lag to plot are marked in a band above each panel: missing (red cross),
//!   failed (dark-red triangle), pending (grey ring), and the rare copy confirmed only by ECR's
//!   status API, whose lag is unknown (blue ring).
//!
//! Hand-written SVG: a few `write!`s need no drawing crate. Every text that came from outside
//! (repository, tag, digest) goes through [`escape`].
//!
//! Memory: while verdicts stream out, [`Lags`] keeps 24 bytes per replicated or pending verdict,
//! and each problem verdict (late, untagged, failed, missing) whole, to carry its image as a
//! tooltip. The report lists only the worst few problems, the chart draws them all: a chart's
//! memory grows with the verdicts of the period, which is why it is asked for, not the default.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};

use super::human_lag;
use crate::domain::config::Destination;
use crate::domain::correlate::Status;
use crate::domain::report::{DestinationSummary, ReplicationRecord, Report, problem_order};
use crate::domain::time::Timestamp;

/// One replicated or pending verdict, as small as the chart allows.
#[derive(Clone, Copy, Debug)]
struct Point {
    pushed_at: Timestamp,
    /// `None`: pending, or copied with no known lag (only ECR's status API said COMPLETE).
    /// Single precision is a tenth of a second at a week: plenty for a picture.
    lag_seconds: Option<f32>,
    /// Index into [`Lags::destinations`]: a destination is a dozen bytes and a heap string.
    destination: u32,
    status: Status,
}

// What the module documentation promises per verdict.
const _: () = assert!(size_of::<Point>() == 24);

/// The replicated and pending verdicts of a run, collected as they stream out.
#[derive(Debug, Default)]
pub struct Lags {
    destinations: Vec<Destination>,
    index: HashMap<Destination, u32>,
    points: Vec<Point>,
    /// Late, untagged, failed and missing verdicts, drawn on top with their image.
    problems: Vec<ReplicationRecord>,
}

impl Lags {
    /// Notes one verdict: a replicated or pending one as a point, a problem whole.
    pub fn add(&mut self, record: &ReplicationRecord) {
        if record.outcome.status.is_problem() {
            self.problems.push(record.clone());
            return;
        }
        let destination = match self.index.get(&record.key.destination) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.destinations.len()).unwrap_or(u32::MAX);
                self.destinations.push(record.key.destination.clone());
                self.index.insert(record.key.destination.clone(), i);
                i
            }
        };
        self.points.push(Point {
            pushed_at: record.pushed_at,
            lag_seconds: record.outcome.latency_ms.map(|ms| ms as f32 / 1000.0),
            destination,
            status: record.outcome.status,
        });
    }
}

/// Escapes text for SVG (XML) content and attribute values. Characters XML 1.0 cannot carry at
/// all (control characters other than tab and line breaks) become U+FFFD: the parsers refuse a
/// file with one, even escaped.
pub fn escape(s: &str) -> Cow<'_, str> {
    let needs = |c: char| matches!(c, '&' | '<' | '>' | '"' | '\'') || !xml_char(c);
    if !s.chars().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if !xml_char(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// XML 1.0's `Char` production (surrogates cannot occur in a Rust `char`).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

// ---------------------------------------------------------------------------------------------
// Layout, in SVG user units (pixels at 100 %)
// ---------------------------------------------------------------------------------------------

const WIDTH: f64 = 960.0;
/// Room for the lag labels and the band's label.
const LEFT: f64 = 88.0;
/// Room for half of the last time label.
const RIGHT: f64 = 40.0;
/// Keeps marks at the ends of the period off the axes.
const PAD: f64 = 10.0;
/// Where the first panel starts: below the title, the subtitle and the legend.
const TOP: f64 = 92.0;
/// A panel: its heading, the "no copy" band, the plot, the time labels.
const HEADING: f64 = 14.0;
const BAND_TOP: f64 = 22.0;
const BAND_H: f64 = 20.0;
const PLOT_TOP: f64 = 50.0;
const PLOT_H: f64 = 130.0;
const PANEL_H: f64 = 210.0;
/// Below the last panel: the time axis' title.
const BOTTOM: f64 = 28.0;
/// At most this many time labels: more would overlap at this width.
const MAX_TIME_TICKS: i64 = 8;

/// Lag gridlines: seconds and label. Round human durations, roughly a decade apart.
const LAG_TICKS: [(f64, &str); 10] = [
    (0.1, "100ms"),
    (1.0, "1s"),
    (10.0, "10s"),
    (60.0, "1m"),
    (600.0, "10m"),
    (3600.0, "1h"),
    (21_600.0, "6h"),
    (86_400.0, "1d"),
    (604_800.0, "7d"),
    (2_592_000.0, "30d"),
];

/// Steps between time labels, in milliseconds; past the last, it doubles.
const TIME_STEPS: [i64; 16] = [
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
    1_209_600_000,
    2_419_200_000,
];
const DAY_MS: i64 = 86_400_000;

const STYLE: &str = "text{font-family:sans-serif;font-size:12px;fill:#1a202c}\
.title{font-size:17px;font-weight:bold}\
.sub{fill:#4a5568}\
.panel-title{font-weight:bold}\
.tick{font-size:10px;fill:#4a5568}\
.grid{stroke:#e2e8f0;stroke-width:1}\
.axis{stroke:#a0aec0;stroke-width:1}\
.band{fill:#f7fafc;stroke:#e2e8f0}\
.late-zone{fill:#fff5f5}\
.window{stroke:#c53030;stroke-width:1.2;stroke-dasharray:6 4}\
.window-label{font-size:10px;fill:#c53030}\
.replicated{fill:#2b6cb0;fill-opacity:0.75}\
.late{fill:#dd6b20;stroke:#7b341e;stroke-width:0.8}\
.untagged{fill:#805ad5}\
.failed{fill:#822727}\
.missing{fill:none;stroke:#e53e3e;stroke-width:2.2}\
.pending{fill:none;stroke:#718096;stroke-width:1.5}\
.archived{fill:none;stroke:#805ad5;stroke-width:1.5}\
.lag-unknown{fill:none;stroke:#2b6cb0;stroke-width:1.5}";

/// A number of pixels, to a tenth: short, and the same bytes on every run.
struct Px(f64);

impl fmt::Display for Px {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = (self.0 * 10.0).round() / 10.0;
        if v.fract() == 0.0 {
            write!(f, "{}", v as i64)
        } else {
            write!(f, "{v:.1}")
        }
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Dot,
    Diamond,
    Triangle,
    Cross,
    Ring,
}

/// One mark, with an optional tooltip (already escaped).
fn mark(out: &mut dyn Write, shape: Shape, x: f64, y: f64, title: Option<&str>) -> io::Result<()> {
    let (x, y) = (Px(x), Px(y));
    let (open, close) = match shape {
        Shape::Dot | Shape::Ring => (format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"3.5\""), "circle"),
        Shape::Diamond => (
            format!(
                "<path d=\"M{x} {}l4.5 4.5l-4.5 4.5l-4.5-4.5z\"",
                Px(y.0 - 4.5)
            ),
            "path",
        ),
        Shape::Triangle => (
            format!("<path d=\"M{} {}h10l-5 9z\"", Px(x.0 - 5.0), Px(y.0 - 4.5)),
            "path",
        ),
        Shape::Cross => (
            format!(
                "<path d=\"M{} {}l8 8m0-8l-8 8\"",
                Px(x.0 - 4.0),
                Px(y.0 - 4.0)
            ),
            "path",
        ),
    };
    match title {
        Some(t) => write!(out, "{open}><title>{t}</title></{close}>"),
        None => write!(out, "{open}/>"),
    }
}

/// Push time to x: `[from, until]` onto the plot's width.
struct TimeAxis {
    from: i64,
    until: i64,
    step: i64,
}

impl TimeAxis {
    /// Over `period` when given (the audit's), else over the pushes drawn, widened to whole steps.
    fn new(period: Option<(Timestamp, Timestamp)>, pushes: (i64, i64)) -> TimeAxis {
        let (from, until) = period.map_or(pushes, |(a, b)| (a.millis(), b.millis()));
        let span = until.saturating_sub(from).max(1);
        let mut step = TIME_STEPS
            .iter()
            .copied()
            .find(|s| span / s <= MAX_TIME_TICKS)
            .unwrap_or(TIME_STEPS[TIME_STEPS.len() - 1]);
        while span / step > MAX_TIME_TICKS {
            step = step.saturating_mul(2);
        }
        if period.is_some() {
            return TimeAxis { from, until, step };
        }
        let from = from.div_euclid(step) * step;
        let until = (until.div_euclid(step) + i64::from(until.rem_euclid(step) != 0)) * step;
        TimeAxis {
            from,
            until: if until > from { until } else { from + step },
            step,
        }
    }

    fn x(&self, t: Timestamp) -> f64 {
        let width = WIDTH - RIGHT - LEFT - 2.0 * PAD;
        let share = (t.millis().clamp(self.from, self.until) - self.from) as f64
            / (self.until - self.from).max(1) as f64;
        LEFT + PAD + share * width
    }

    /// The labelled instants: whole multiples of the step inside the axis.
    fn ticks(&self) -> impl Iterator<Item = i64> + '_ {
        let first =
            self.from.div_euclid(self.step) + i64::from(self.from.rem_euclid(self.step) != 0);
        (first..)
            .map(|i| i.saturating_mul(self.step))
            .take_while(|t| *t <= self.until)
    }

    fn one_day(&self) -> bool {
        self.from.div_euclid(DAY_MS) == (self.until - 1).div_euclid(DAY_MS)
    }

    fn label(&self, t: i64) -> String {
        let s = Timestamp::from_millis(t).to_string();
        let part = |r: std::ops::Range<usize>| s.get(r).unwrap_or("?").to_string();
        if self.one_day() {
            part(11..16)
        } else if self.step >= DAY_MS {
            part(5..10)
        } else {
            format!("{} {}", part(5..10), part(11..16))
        }
    }
}

/// Lag to y, on a log scale between two of [`LAG_TICKS`].
struct LagAxis {
    lo: usize,
    hi: usize,
}

impl LagAxis {
    /// The smallest range of ticks that holds every lag, and the window with room above it
    /// (up to ten windows) so that late copies stand apart from the line.
    fn new(lags: impl Iterator<Item = f64>, window_seconds: f64) -> LagAxis {
        let (mut lo_v, mut hi_v) = (window_seconds, 10.0 * window_seconds);
        for v in lags {
            if v > 0.0 {
                lo_v = lo_v.min(v);
            }
            hi_v = hi_v.max(v);
        }
        let lo = LAG_TICKS.iter().rposition(|(t, _)| *t <= lo_v).unwrap_or(0);
        let hi = LAG_TICKS
            .iter()
            .position(|(t, _)| *t >= hi_v)
            .unwrap_or(LAG_TICKS.len() - 1);
        match (lo, hi) {
            (lo, hi) if hi > lo => LagAxis { lo, hi },
            (lo, _) if lo + 1 < LAG_TICKS.len() => LagAxis { lo, hi: lo + 1 },
            (lo, _) => LagAxis { lo: lo - 1, hi: lo },
        }
    }

    /// From the plot's top; lags outside the range (a negative one when clocks disagree) are
    /// drawn at its edge.
    fn y(&self, seconds: f64) -> f64 {
        let (lo, hi) = (LAG_TICKS[self.lo].0.ln(), LAG_TICKS[self.hi].0.ln());
        let v = seconds
            .clamp(LAG_TICKS[self.lo].0, LAG_TICKS[self.hi].0)
            .ln();
        PLOT_H - (v - lo) / (hi - lo) * PLOT_H
    }

    fn ticks(&self) -> &'static [(f64, &'static str)] {
        &LAG_TICKS[self.lo..=self.hi]
    }
}

fn summary_line(d: &DestinationSummary) -> String {
    let counts: Vec<String> = Status::ALL
        .iter()
        .filter(|&&s| d.count(s) > 0)
        .map(|&s| format!("{} {}", d.count(s), s.as_str()))
        .collect();
    let lag = d
        .latency
        .map(|p| format!(" · lag p50 {}, max {}", human_lag(p.p50), human_lag(p.max)))
        .unwrap_or_default();
    format!("{} expected: {}{lag}", d.expected, counts.join(", "))
}

/// The tooltip of a problem copy: everything needed to go and look at it.
fn describe(p: &ReplicationRecord) -> String {
    let tag = p.tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
    let lag = p
        .outcome
        .latency_ms
        .map(|ms| format!(", lag {}", human_lag(ms)))
        .unwrap_or_default();
    format!(
        "{}: {}{tag} @ {} from {}/{}, pushed {}{lag}",
        p.outcome.status.as_str(),
        p.key.repository,
        p.key.digest,
        p.key.source_account,
        p.key.source_region,
        p.pushed_at
    )
}

/// Writes the chart of `report` (with `lags`, the replicated and pending verdicts collected while
/// it was built). `period` is the time axis when the run had one (`audit --since --until`);
/// without it the axis spans the pushes drawn.
pub fn svg(
    lags: &Lags,
    report: &Report,
    period: Option<(Timestamp, Timestamp)>,
    out: &mut dyn Write,
) -> io::Result<()> {
    // A destination owed only deletes has no copy lag to draw.
    let panels: Vec<&DestinationSummary> = report
        .destinations
        .iter()
        .filter(|d| d.expected > 0)
        .collect();
    let height = if panels.is_empty() {
        TOP + 40.0
    } else {
        TOP + PANEL_H * panels.len() as f64 + BOTTOM
    };
    header(out, height)?;
    let range = push_range(lags);
    subtitle(out, report, &panels, period, range)?;

    let Some(range) = range.or(period) else {
        writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">No copies were expected.</text>",
            Px(LEFT),
            Px(TOP + 14.0)
        )?;
        return out.write_all(b"</svg>\n");
    };
    let time = TimeAxis::new(period, (range.0.millis(), range.1.millis()));
    let lag = lag_axis(lags, report);
    let lag_unknown = lags
        .points
        .iter()
        .any(|p| p.lag_seconds.is_none() && p.status == Status::Replicated);
    let archived = lags
        .problems
        .iter()
        .any(|p| p.outcome.status == Status::Archived);
    legend(out, &report.window.to_string(), lag_unknown, archived)?;

    for (i, d) in panels.iter().enumerate() {
        let top = TOP + PANEL_H * i as f64;
        panel(out, lags, report, d, top, &time, &lag)?;
    }

    axis_titles(out, &time, panels.len(), height)?;
    out.write_all(b"</svg>\n")
}

/// The opening of the document, `height` pixels high: the `svg` element, its title and style,
/// the white background, and the chart's title.
fn header(out: &mut dyn Write, height: f64) -> io::Result<()> {
    let title = "ECR replication lag per destination";
    writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">",
        w = Px(WIDTH),
        h = Px(height)
    )?;
    writeln!(out, "<title>{title}</title>")?;
    writeln!(out, "<style>{STYLE}</style>")?;
    writeln!(
        out,
        "<rect width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>",
        Px(WIDTH),
        Px(height)
    )?;
    writeln!(
        out,
        "<text x=\"{}\" y=\"28\" class=\"title\">{title}</text>",
        Px(LEFT)
    )
}

/// The earliest and latest push drawn (points and problems), `None` when there is none: the
/// time axis when the run has no period.
fn push_range(lags: &Lags) -> Option<(Timestamp, Timestamp)> {
    let pushes = lags
        .points
        .iter()
        .map(|p| p.pushed_at)
        .chain(lags.problems.iter().map(|p| p.pushed_at));
    pushes.fold(None, |r: Option<(Timestamp, Timestamp)>, t| {
        Some(r.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
    })
}

/// The line under the title: the copies expected in the `panels`, the pushes shown (the
/// `period`, else the `range` of the pushes drawn), the window and the audit time.
fn subtitle(
    out: &mut dyn Write,
    report: &Report,
    panels: &[&DestinationSummary],
    period: Option<(Timestamp, Timestamp)>,
    range: Option<(Timestamp, Timestamp)>,
) -> io::Result<()> {
    let now = report
        .now
        .map_or_else(|| "none".to_string(), |t| t.to_string());
    let expected: u64 = panels.iter().map(|d| d.expected).sum();
    let shown = match (period, range) {
        (Some((a, b)), _) => format!("pushes from {a} until {b}"),
        (None, Some((a, b))) => format!("pushes from {a} to {b}"),
        (None, None) => "no pushes".to_string(),
    };
    writeln!(
        out,
        "<text x=\"{}\" y=\"48\" class=\"sub\">{expected} expected copies · {} · window {} · audit time {}</text>",
        Px(LEFT),
        escape(&shown),
        report.window,
        escape(&now)
    )
}

/// The lag axis every panel shares: it holds every known lag, of points and problems alike,
/// and the report's window.
fn lag_axis(lags: &Lags, report: &Report) -> LagAxis {
    let window_seconds = report.window.millis() as f64 / 1000.0;
    LagAxis::new(
        lags.points
            .iter()
            .filter_map(|p| p.lag_seconds.map(f64::from))
            .chain(
                lags.problems
                    .iter()
                    .filter_map(|p| p.outcome.latency_ms.map(|ms| ms as f64 / 1000.0)),
            ),
        window_seconds,
    )
}

/// The axes' titles: copy lag up the left of the `panels` (how many), push time (with its
/// day, when the axis spans one) along the bottom of a chart `height` pixels high.
fn axis_titles(out: &mut dyn Write, time: &TimeAxis, panels: usize, height: f64) -> io::Result<()> {
    let panels_h = PANEL_H * panels as f64;
    writeln!(
        out,
        "<text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\" class=\"sub\">copy lag (log scale)</text>",
        Px(TOP + panels_h / 2.0)
    )?;
    let day = if time.one_day() {
        format!(", {}", &Timestamp::from_millis(time.from).to_string()[..10])
    } else {
        String::new()
    };
    writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"sub\">push time (UTC{day})</text>",
        Px(LEFT + (WIDTH - RIGHT - LEFT) / 2.0),
        Px(height - 10.0)
    )
}

fn legend(out: &mut dyn Write, window: &str, lag_unknown: bool, archived: bool) -> io::Result<()> {
    let window_label = format!("window {window}");
    let mut items: Vec<(&str, Shape, &str)> = vec![
        ("replicated", Shape::Dot, "replicated"),
        ("late", Shape::Dot, "late"),
        (
            "untagged",
            Shape::Diamond,
            "untagged (copy without its tag)",
        ),
        ("failed", Shape::Triangle, "failed"),
        ("missing", Shape::Cross, "missing"),
        ("pending", Shape::Ring, "pending"),
    ];
    if lag_unknown {
        items.push(("lag-unknown", Shape::Ring, "copied, lag unknown"));
    }
    // Only the Lambda's sweep finds archived copies (`audit`): replay's charts do without.
    if archived {
        items.push(("archived", Shape::Diamond, "archived (cannot be pulled)"));
    }
    let y = 70.0;
    let mut x = LEFT;
    writeln!(out, "<g class=\"legend\">")?;
    for (class, shape, label) in items {
        write!(out, "<g class=\"{class}\">")?;
        mark(out, shape, x + 4.0, y - 4.0, None)?;
        writeln!(
            out,
            "</g><text x=\"{}\" y=\"{}\">{label}</text>",
            Px(x + 13.0),
            Px(y)
        )?;
        // Sans-serif at 12 px averages about 6.2 px a character.
        x += 13.0 + 6.2 * label.len() as f64 + 16.0;
    }
    writeln!(
        out,
        "<line class=\"window\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/><text x=\"{}\" y=\"{}\">{window_label}</text>",
        Px(x),
        Px(y - 4.0),
        Px(x + 22.0),
        Px(y - 4.0),
        Px(x + 28.0),
        Px(y)
    )?;
    writeln!(out, "</g>")
}

/// Where a panel's marks go, in pixels.
#[derive(Clone, Copy)]
struct Frame {
    /// The middle of the "no copy" band.
    band_y: f64,
    /// The plot's top edge (lag is measured down from it).
    plot_top: f64,
}

/// One destination: its frame (heading, band, gridlines, window line), then its marks.
fn panel(
    out: &mut dyn Write,
    lags: &Lags,
    report: &Report,
    d: &DestinationSummary,
    top: f64,
    time: &TimeAxis,
    lag: &LagAxis,
) -> io::Result<()> {
    let name = format!("{} {}", d.destination.account, d.destination.region);
    writeln!(
        out,
        "<g class=\"panel\" data-destination=\"{}\">",
        escape(&name)
    )?;
    let frame = frame(out, report, d, &name, top, time, lag)?;
    marks(out, lags, d, &frame, time, lag)?;
    writeln!(out, "</g>")
}

/// The panel's heading, "no copy" band, late zone, gridlines, axes and window line.
fn frame(
    out: &mut dyn Write,
    report: &Report,
    d: &DestinationSummary,
    name: &str,
    top: f64,
    time: &TimeAxis,
    lag: &LagAxis,
) -> io::Result<Frame> {
    writeln!(
        out,
        "<text x=\"{}\" y=\"{}\"><tspan class=\"panel-title\">{}</tspan><tspan class=\"sub\" dx=\"10\">{}</tspan></text>",
        Px(LEFT),
        Px(top + HEADING),
        escape(name),
        escape(&summary_line(d))
    )?;
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let band_top = top + BAND_TOP;
    let band_y = band_top + BAND_H / 2.0;
    writeln!(
        out,
        "<rect class=\"band\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"tick\">no copy</text>",
        Px(x0),
        Px(band_top),
        Px(x1 - x0),
        Px(BAND_H),
        Px(x0 - 8.0),
        Px(band_y + 3.5)
    )?;

    let plot_top = top + PLOT_TOP;
    let plot_bottom = plot_top + PLOT_H;
    let window_seconds = report.window.millis() as f64 / 1000.0;
    let wy = plot_top + lag.y(window_seconds);
    // Above the window is late: tinted, so a point there reads as a problem at a glance.
    writeln!(
        out,
        "<rect class=\"late-zone\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
        Px(x0),
        Px(plot_top),
        Px(x1 - x0),
        Px(wy - plot_top)
    )?;
    for &(seconds, label) in lag.ticks() {
        let y = plot_top + lag.y(seconds);
        writeln!(
            out,
            "<line class=\"grid\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"tick\">{label}</text>",
            Px(x0),
            Px(y),
            Px(x1),
            Px(y),
            Px(x0 - 8.0),
            Px(y + 3.5)
        )?;
    }
    for t in time.ticks() {
        let x = time.x(Timestamp::from_millis(t));
        writeln!(
            out,
            "<line class=\"grid\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"tick\">{}</text>",
            Px(x),
            Px(plot_top),
            Px(x),
            Px(plot_bottom),
            Px(x),
            Px(plot_bottom + 14.0),
            escape(&time.label(t))
        )?;
    }
    writeln!(
        out,
        "<path class=\"axis\" fill=\"none\" d=\"M{} {}V{}H{}\"/>",
        Px(x0),
        Px(plot_top),
        Px(plot_bottom),
        Px(x1)
    )?;
    writeln!(
        out,
        "<line class=\"window\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"window-label\">window {}</text>",
        Px(x0),
        Px(wy),
        Px(x1),
        Px(wy),
        Px(x1 - 2.0),
        Px(wy - 4.0),
        report.window
    )?;
    Ok(Frame { band_y, plot_top })
}

/// The panel's marks: in the band first, then the plot, problems last, so that what needs
/// looking at is drawn on top.
fn marks(
    out: &mut dyn Write,
    lags: &Lags,
    d: &DestinationSummary,
    frame: &Frame,
    time: &TimeAxis,
    lag: &LagAxis,
) -> io::Result<()> {
    let Frame { band_y, plot_top } = *frame;
    let index = lags.index.get(&d.destination).copied();
    // In the order the report lists them, so the picture is the same however they arrived.
    let mut sorted_problems: Vec<&ReplicationRecord> = lags
        .problems
        .iter()
        .filter(|p| p.key.destination == d.destination)
        .collect();
    sorted_problems.sort_by(|a, b| problem_order(a, b));
    let points = |status: Status, with_lag: bool| {
        lags.points.iter().filter(move |p| {
            Some(p.destination) == index
                && p.status == status
                && p.lag_seconds.is_some() == with_lag
        })
    };
    let problems = |status: Status| {
        sorted_problems
            .iter()
            .copied()
            .filter(move |p| p.key.destination == d.destination && p.outcome.status == status)
    };
    let y_of = |seconds: Option<f64>| seconds.map_or(band_y, |s| plot_top + lag.y(s));

    write!(out, "<g class=\"marks pending\">")?;
    for p in points(Status::Pending, false) {
        mark(out, Shape::Ring, time.x(p.pushed_at), band_y, None)?;
    }
    write!(out, "</g>\n<g class=\"marks lag-unknown\">")?;
    for p in points(Status::Replicated, false) {
        mark(out, Shape::Ring, time.x(p.pushed_at), band_y, None)?;
    }
    write!(out, "</g>\n<g class=\"marks replicated\">")?;
    for p in points(Status::Replicated, true) {
        let y = y_of(p.lag_seconds.map(f64::from));
        mark(out, Shape::Dot, time.x(p.pushed_at), y, None)?;
    }
    writeln!(out, "</g>")?;
    for (status, shape) in [
        (Status::Late, Shape::Dot),
        (Status::Untagged, Shape::Diamond),
        (Status::Failed, Shape::Triangle),
        (Status::Missing, Shape::Cross),
        (Status::Archived, Shape::Diamond),
    ] {
        write!(out, "<g class=\"marks {}\">", status.as_str())?;
        for p in problems(status) {
            let y = y_of(p.outcome.latency_ms.map(|ms| ms as f64 / 1000.0));
            let title = describe(p);
            mark(out, shape, time.x(p.pushed_at), y, Some(&escape(&title)))?;
        }
        writeln!(out, "</g>")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::correlate::{GroupKey, Outcome};
    use crate::domain::ids::ImageTag;
    use crate::domain::report::ReportBuilder;
    use crate::domain::time::Window;

    #[test]
    fn markup_and_quotes_are_escaped_and_plain_text_is_borrowed() {
        assert_eq!(
            escape(r#"v1<&>"'"#),
            "v1&lt;&amp;&gt;&quot;&apos;",
            "every character with a meaning in XML"
        );
        assert!(matches!(escape("team/api:v1.4.2"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\u{1}b\tc"),
            "a\u{fffd}b\tc",
            "XML cannot carry U+0001"
        );
        assert_eq!(escape("größe✓"), "größe✓");
    }

    #[test]
    fn pixels_print_to_a_tenth_without_a_needless_fraction() {
        assert_eq!(Px(12.0).to_string(), "12");
        assert_eq!(Px(12.34).to_string(), "12.3");
        assert_eq!(Px(-0.01).to_string(), "0");
    }

    #[test]
    fn the_lag_axis_spans_every_lag_and_the_window_in_round_durations() {
        let axis = LagAxis::new([4.0, 7.0, 2190.0].into_iter(), 1800.0);
        let labels: Vec<&str> = axis.ticks().iter().map(|(_, l)| *l).collect();
        assert_eq!(labels, ["1s", "10s", "1m", "10m", "1h", "6h"]);
        assert_eq!(axis.y(1.0), PLOT_H, "the smallest tick at the bottom");
        assert_eq!(axis.y(21_600.0), 0.0, "the largest at the top");
        assert_eq!(
            axis.y(-3.0),
            PLOT_H,
            "a negative lag (clocks disagree) at the edge"
        );
        let only_window = LagAxis::new(std::iter::empty(), 60.0);
        assert_eq!(
            only_window
                .ticks()
                .iter()
                .map(|(_, l)| *l)
                .collect::<Vec<_>>(),
            ["1m", "10m"],
            "ten windows above the window"
        );
    }

    #[test]
    fn the_time_axis_has_at_most_eight_labels_on_whole_steps() {
        let t = |s: &str| Timestamp::parse_rfc3339(s).unwrap().millis();
        let axis = TimeAxis::new(None, (t("2024-07-01T10:00:00Z"), t("2024-07-01T10:50:00Z")));
        let labels: Vec<String> = axis.ticks().map(|x| axis.label(x)).collect();
        assert_eq!(
            labels,
            ["10:00", "10:10", "10:20", "10:30", "10:40", "10:50"]
        );
        let week = TimeAxis::new(
            Some((
                Timestamp::parse_rfc3339("2024-07-01T00:00:00Z").unwrap(),
                Timestamp::parse_rfc3339("2024-07-08T00:00:00Z").unwrap(),
            )),
            (0, 0),
        );
        let labels: Vec<String> = week.ticks().map(|x| week.label(x)).collect();
        assert_eq!(labels.first().map(String::as_str), Some("07-01"));
        assert!(labels.len() <= 8, "{labels:?}");
    }

    #[test]
    fn a_replicated_or_pending_verdict_costs_24_bytes_and_a_problem_nothing() {
        let key = GroupKey::example();
        let record = |status, latency_ms| ReplicationRecord {
            key: key.clone(),
            trigger: crate::domain::correlate::Trigger::Push,
            tag: Some(ImageTag::parse("v1").unwrap()),
            pushed_at: Timestamp::from_millis(0),
            outcome: Outcome {
                status,
                replicated_at: None,
                latency_ms,
            },
        };
        let mut lags = Lags::default();
        lags.add(&record(Status::Replicated, Some(4000)));
        lags.add(&record(Status::Pending, None));
        lags.add(&record(Status::Missing, None));
        lags.add(&record(Status::Late, Some(4_000_000)));
        assert_eq!(lags.points.len(), 2);
        assert_eq!(
            lags.problems.len(),
            2,
            "problems are kept whole, for their tooltip"
        );
        assert_eq!(size_of::<Point>(), 24);
    }

    #[test]
    fn a_report_with_nothing_expected_is_still_a_whole_svg() {
        let report = ReportBuilder::default().finish(Window::DEFAULT, None);
        let mut out = Vec::new();
        svg(&Lags::default(), &report, None, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("<svg ") && text.ends_with("</svg>\n"));
        assert!(text.contains("No copies were expected."));
    }
}
