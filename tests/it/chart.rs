//! `--chart FILE.svg`: the lag picture, drawn by the real binary from the sample events in
//! `events/`, read back as XML (roxmltree) and checked mark by mark; and the picture the README
//! shows, redrawn and compared byte for byte.

use std::path::Path;
use std::process::Output;

use roxmltree::{Document, Node};

use crate::support::cli;
use cli::{CONFIG, root, run};

/// The picture README.md shows, drawn by its first command with `--chart docs/replay-chart.svg`.
const README_CHART: &str = "docs/replay-chart.svg";

/// `replay --chart DIR/chart.svg` with `args`: the run's output and the file's text.
fn replay_with_chart(dir: &Path, args: &[&str]) -> (Output, String) {
    let chart = dir.join("chart.svg");
    let chart_arg = chart.to_str().unwrap();
    let out = run(&[&["replay", "--chart", chart_arg], args].concat());
    let svg = std::fs::read_to_string(&chart).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; stderr: {}",
            chart.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, svg)
}

fn has_class(node: &Node, class: &str) -> bool {
    node.attribute("class")
        .is_some_and(|c| c.split(' ').any(|c| c == class))
}

/// The marks (circles and paths) of one status in a panel.
fn marks<'a>(panel: Node<'a, 'a>, status: &str) -> Vec<Node<'a, 'a>> {
    panel
        .children()
        .filter(|g| has_class(g, "marks") && has_class(g, status))
        .flat_map(|g| g.children().filter(Node::is_element))
        .collect()
}

fn number(node: &Node, attribute: &str) -> f64 {
    node.attribute(attribute)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{attribute} of {node:?}"))
}

fn panels<'a>(doc: &'a Document<'a>) -> Vec<(String, Node<'a, 'a>)> {
    doc.root_element()
        .children()
        .filter(|n| has_class(n, "panel"))
        .map(|n| (n.attribute("data-destination").unwrap().to_string(), n))
        .collect()
}

#[test]
fn the_sample_chart_has_a_panel_per_destination_and_a_mark_per_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (out, svg) = replay_with_chart(dir.path(), &["--registry", CONFIG, "events/"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the chart changes no exit status"
    );
    let plain = run(&["replay", "--registry", CONFIG, "events/"]);
    assert_eq!(out.stdout, plain.stdout, "nor the printed report");

    let doc = Document::parse(&svg).expect("the chart is well-formed XML");
    let svg_root = doc.root_element();
    assert_eq!(svg_root.tag_name().name(), "svg");
    assert_eq!(
        svg_root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let (w, h) = (number(&svg_root, "width"), number(&svg_root, "height"));
    assert_eq!(
        svg_root.attribute("viewBox"),
        Some(format!("0 0 {w} {h}").as_str())
    );

    let panels = panels(&doc);
    let names: Vec<&str> = panels.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "111122223333 ap-southeast-2",
            "111122223333 us-east-1",
            "444455556666 eu-west-1"
        ]
    );
    // (replicated, late, untagged, failed, missing, pending) per destination, as the report says.
    let counts: Vec<[usize; 6]> = panels
        .iter()
        .map(|(_, p)| {
            [
                "replicated",
                "late",
                "untagged",
                "failed",
                "missing",
                "pending",
            ]
            .map(|s| marks(*p, s).len())
        })
        .collect();
    assert_eq!(
        counts,
        [[0, 1, 0, 0, 1, 0], [4, 0, 1, 0, 0, 0], [2, 0, 0, 1, 0, 2]]
    );
    let completed: usize = panels
        .iter()
        .map(|(_, p)| {
            ["replicated", "late", "untagged", "lag-unknown"]
                .iter()
                .map(|s| marks(*p, s).len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(completed, 8, "one point per copy that arrived");

    for (name, panel) in &panels {
        let windows: Vec<Node> = panel
            .children()
            .filter(|n| n.has_tag_name("line") && has_class(n, "window"))
            .collect();
        assert_eq!(windows.len(), 1, "{name}: one window line");
        let window_y = number(&windows[0], "y1");
        assert_eq!(window_y, number(&windows[0], "y2"), "horizontal");
        for late in marks(*panel, "late") {
            assert!(
                number(&late, "cy") < window_y,
                "{name}: late is above the window"
            );
        }
        for ok in marks(*panel, "replicated") {
            assert!(number(&ok, "cy") > window_y, "{name}: on time is below it");
        }
        let band = panel
            .children()
            .find(|n| has_class(n, "band"))
            .expect("a no-copy band");
        let (band_top, band_bottom) = (
            number(&band, "y"),
            number(&band, "y") + number(&band, "height"),
        );
        for status in ["missing", "failed", "pending"] {
            for m in marks(*panel, status) {
                let y = m
                    .attribute("cy")
                    .map(|v| v.parse::<f64>().unwrap())
                    .unwrap_or_else(|| {
                        // A path: its first point, a few pixels above the centre.
                        let d = m.attribute("d").unwrap();
                        d[1..]
                            .split(['h', 'l', ' '])
                            .nth(1)
                            .unwrap()
                            .parse()
                            .unwrap()
                    });
                assert!(
                    (band_top..=band_bottom).contains(&y),
                    "{name}: {status} in the band"
                );
            }
        }
    }

    let missing = marks(panels[0].1, "missing");
    let tooltip = missing[0]
        .children()
        .find(|n| n.has_tag_name("title"))
        .and_then(|t| t.text())
        .expect("a problem mark names its image");
    assert!(
        tooltip.starts_with("missing: prod/payments:v3 @ sha256:e7d9d87ccf25"),
        "{tooltip}"
    );

    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    let legend = svg_root
        .children()
        .find(|n| has_class(n, "legend"))
        .expect("a legend");
    let legend_texts: Vec<&str> = legend.descendants().filter_map(|n| n.text()).collect();
    for label in [
        "replicated",
        "late",
        "failed",
        "missing",
        "pending",
        "window 30m",
    ] {
        assert!(
            legend_texts.contains(&label),
            "legend {label}: {legend_texts:?}"
        );
    }
    for label in [
        "ECR replication lag per destination",
        "copy lag (log scale)",
        "push time (UTC, 2024-07-01)",
        "10:00",
        "10:50",
        "1s",
        "1h",
    ] {
        assert!(texts.contains(&label), "{label} in {texts:?}");
    }
}

#[test]
fn a_tag_with_markup_characters_is_escaped_in_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let tag = r#"v1<&>"'"#;
    // A push nobody copied: missing in both destinations of the us-west-2 rule, each mark with
    // the tag in its tooltip.
    let push = serde_json::json!({
        "version": "0", "id": "escape-1", "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": "111122223333", "time": "2024-07-01T10:00:00Z", "region": "us-west-2",
        "resources": [],
        "detail": {"result": "SUCCESS", "repository-name": "team/app", "action-type": "PUSH",
                   "image-digest": "sha256:1111", "image-tag": tag}
    });
    let events = dir.path().join("events.json");
    std::fs::write(&events, push.to_string()).unwrap();
    let (out, svg) = replay_with_chart(
        dir.path(),
        &[
            "--registry",
            CONFIG,
            "--now",
            "2024-07-01T12:00:00Z",
            events.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!svg.contains(tag), "the raw tag never reaches the file");
    let doc = Document::parse(&svg).expect("still well-formed XML");
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .filter(|t| t.starts_with("missing"))
        .collect();
    assert_eq!(titles.len(), 2);
    for t in titles {
        assert!(
            t.contains(&format!("team/app:{tag} @ sha256:1111")),
            "the parser reads the tag back: {t}"
        );
    }
}

#[test]
fn the_readme_picture_is_what_the_readme_command_draws() {
    let dir = tempfile::tempdir().unwrap();
    let (_, svg) = replay_with_chart(dir.path(), &["--registry", CONFIG, "events/"]);
    let shown = std::fs::read_to_string(root().join(README_CHART)).unwrap_or_else(|e| {
        panic!("{README_CHART}: {e}; draw it with the README's first command and --chart {README_CHART}")
    });
    assert!(
        shown == svg,
        "{README_CHART} is stale: run the README's first command with --chart {README_CHART}"
    );
}

#[test]
fn a_chart_that_cannot_be_written_stops_the_run_with_exit_2_naming_the_file() {
    let out = run(&[
        "replay",
        "--registry",
        CONFIG,
        "--chart",
        "/nonexistent-dir/chart.svg",
        "events/",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot write the chart /nonexistent-dir/chart.svg"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no report without its chart");
}

#[test]
fn a_run_that_stops_on_an_input_it_cannot_read_leaves_no_chart_behind() {
    let dir = tempfile::tempdir().unwrap();
    // There, and not a directory, so it is read in its turn, after `events/`; but a socket
    // cannot be opened as a file.
    let socket = dir.path().join("socket.json");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let chart = dir.path().join("chart.svg");
    let stopped = |format: &str| {
        let out = run(&[
            "replay",
            "--registry",
            CONFIG,
            "--format",
            format,
            "--chart",
            chart.to_str().unwrap(),
            "events/",
            socket.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{format}: {stderr}");
        assert!(
            stderr.contains("cannot read input") && stderr.contains("socket.json"),
            "{format}: {stderr}"
        );
    };
    for format in ["table", "json"] {
        stopped(format);
        assert!(!chart.exists(), "{format}: no chart without its report");
    }
    // A chart already there is left as it was.
    std::fs::write(&chart, "an earlier chart").unwrap();
    stopped("table");
    assert_eq!(std::fs::read_to_string(&chart).unwrap(), "an earlier chart");
}
