//! What `hourglass bench all` found, and its three renderings: a Markdown table (printed, and pasted
//! into README "Performance"), a JSON document and an SVG bar chart of each stage's per-core rate next
//! to its floor's. Pure functions of a [`Report`], so they are tested on a fixed one.

use std::fmt::Write as _;

use serde_json::json;

/// One line of the table: a stage or a floor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// What was measured, e.g. `collector` or `floor: decode+produce`.
    pub name: String,
    /// A floor rather than a stage.
    pub is_floor: bool,
    /// Events per wall second.
    pub events_per_second: Option<f64>,
    /// Events per CPU-second of the measured process.
    pub per_core_events_per_second: Option<f64>,
    /// CPU-seconds of the measured process per million events.
    pub cpu_seconds_per_million: Option<f64>,
    /// The floor this row is compared with (another row's name).
    pub floor: Option<String>,
    /// This row's per-core rate over its floor's (events/s when either has no per-core rate).
    pub ratio_to_floor: Option<f64>,
    /// Issue 24's targets for this row, each met or not.
    pub checks: Vec<Check>,
    /// Further figures, e.g. `Cassandra 31.2 CPU-s/M`.
    pub notes: Vec<String>,
}

/// A target and whether the measurement met it.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// The target, e.g. `≥ 500k/core`.
    pub target: String,
    /// Whether it was met.
    pub met: bool,
}

impl Check {
    /// A target met when `met`.
    pub fn new(target: impl Into<String>, met: bool) -> Self {
        Self { target: target.into(), met }
    }
}

/// Everything `bench all` measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The machine, e.g. `2 cores, 7.8 GiB, shared`.
    pub machine: String,
    /// The `--scale` of the run.
    pub scale: f64,
    /// When the run started, RFC 3339.
    pub started_at: String,
    /// Wall seconds of the whole run.
    pub wall_seconds: f64,
    /// The rows, in the order measured.
    pub rows: Vec<Row>,
}

/// Fills each row's ratio to its floor: per-core over per-core where both have one, else events/s
/// over events/s. A floor that was not measured leaves the ratio empty.
pub fn fill_ratios(rows: &mut [Row]) {
    let figures: Vec<(String, Option<f64>, Option<f64>)> =
        rows.iter().map(|row| (row.name.clone(), row.per_core_events_per_second, row.events_per_second)).collect();
    for row in rows.iter_mut() {
        let Some(floor_name) = &row.floor else { continue };
        let Some((_, floor_per_core, floor_rate)) = figures.iter().find(|(name, ..)| name == floor_name) else {
            continue;
        };
        row.ratio_to_floor = match (row.per_core_events_per_second, floor_per_core) {
            (Some(own), Some(floor)) if *floor > 0.0 => Some(own / floor),
            _ => match (row.events_per_second, floor_rate) {
                (Some(own), Some(floor)) if *floor > 0.0 => Some(own / floor),
                _ => None,
            },
        };
    }
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < -0.5 { format!("-{grouped}") } else { grouped }
}

fn cell(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "—".to_owned(), format)
}

impl Row {
    /// The target column: every check, `; `-separated.
    fn target_text(&self) -> String {
        if self.checks.is_empty() {
            return "—".into();
        }
        self.checks.iter().map(|check| check.target.as_str()).collect::<Vec<_>>().join("; ")
    }

    /// The met column: `yes`, `no`, or `k of n` when only some are met.
    fn met_text(&self) -> String {
        let met = self.checks.iter().filter(|check| check.met).count();
        match (met, self.checks.len()) {
            (_, 0) => "—".into(),
            (met, total) if met == total => "yes".into(),
            (0, _) => "no".into(),
            (met, total) => format!("{met} of {total}"),
        }
    }
}

/// The table, in Markdown: stage, events/s, per-core events/s, CPU-s per million, ratio to its floor,
/// targets, met, other figures.
pub fn render_table(report: &Report) -> String {
    let mut table = String::from(
        "| stage | events/s | per core | CPU-s / M events | vs floor | target (issue 24) | met | other figures |\n\
         |---|---:|---:|---:|---:|---|---|---|\n",
    );
    for row in &report.rows {
        let ratio = match (&row.floor, row.ratio_to_floor) {
            (Some(floor), Some(ratio)) => format!("{ratio:.2}× {}", floor.trim_start_matches("floor: ")),
            _ => "—".into(),
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            cell(row.events_per_second, thousands),
            cell(row.per_core_events_per_second, thousands),
            cell(row.cpu_seconds_per_million, |value| format!("{value:.2}")),
            ratio,
            row.target_text(),
            row.met_text(),
            if row.notes.is_empty() { "—".into() } else { row.notes.join("; ") },
        );
    }
    table
}

/// The report as JSON: the run, then every row with its figures, checks and notes.
pub fn to_json(report: &Report) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = report
        .rows
        .iter()
        .map(|row| {
            json!({
                "name": row.name,
                "is_floor": row.is_floor,
                "events_per_second": row.events_per_second,
                "per_core_events_per_second": row.per_core_events_per_second,
                "cpu_seconds_per_million": row.cpu_seconds_per_million,
                "floor": row.floor,
                "ratio_to_floor": row.ratio_to_floor,
                "checks": row.checks.iter().map(|check| json!({"target": check.target, "met": check.met})).collect::<Vec<_>>(),
                "notes": row.notes,
            })
        })
        .collect();
    json!({
        "machine": report.machine,
        "scale": report.scale,
        "started_at": report.started_at,
        "wall_seconds": report.wall_seconds,
        "rows": rows,
    })
}

/// Text escaped for XML content and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A horizontal bar chart of per-core events/s: each stage with a per-core rate, followed by its
/// floor's bar (grey), then the floors no stage showed. Hand-written SVG, no plotting dependency.
pub fn render_svg(report: &Report) -> String {
    const LABEL_WIDTH: f64 = 230.0;
    const BAR_WIDTH: f64 = 520.0;
    const ROW_HEIGHT: f64 = 22.0;
    const TOP: f64 = 68.0;
    let by_name = |name: &str| report.rows.iter().find(|row| row.name == name);
    let mut bars: Vec<&Row> = Vec::new();
    for row in report.rows.iter().filter(|row| !row.is_floor && row.per_core_events_per_second.is_some()) {
        bars.push(row);
        if let Some(floor) =
            row.floor.as_deref().and_then(by_name).filter(|floor| floor.per_core_events_per_second.is_some())
            && !bars.contains(&floor)
        {
            bars.push(floor);
        }
    }
    for row in report.rows.iter().filter(|row| row.is_floor && row.per_core_events_per_second.is_some()) {
        if !bars.contains(&row) {
            bars.push(row);
        }
    }
    let largest = bars.iter().filter_map(|row| row.per_core_events_per_second).fold(1.0, f64::max);
    let width = LABEL_WIDTH + BAR_WIDTH + 150.0;
    let height = TOP + ROW_HEIGHT * bars.len() as f64 + 20.0;
    let mut svg = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect x=\"0\" y=\"0\" width=\"{width:.0}\" height=\"{height:.0}\" fill=\"#ffffff\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n\
         <text x=\"10\" y=\"38\" fill=\"#555555\">{}</text>\n\
         <text x=\"10\" y=\"54\" fill=\"#555555\">{}</text>\n",
        escape("Events/s per core of each stage's own CPU, next to its floor (grey)"),
        escape(&format!("hourglass bench all --scale {}, {}", report.scale, report.started_at)),
        escape(&report.machine),
    );
    for (index, row) in bars.iter().enumerate() {
        let rate = row.per_core_events_per_second.unwrap_or_default();
        let y = TOP + ROW_HEIGHT * index as f64;
        let length = (rate / largest * BAR_WIDTH).max(1.0);
        let color = if row.is_floor { "#9aa5b1" } else { "#2b6cb0" };
        let _ = write!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
             <rect x=\"{LABEL_WIDTH:.0}\" y=\"{:.1}\" width=\"{length:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            LABEL_WIDTH - 8.0,
            y + 14.0,
            escape(&row.name),
            y + 3.0,
            ROW_HEIGHT - 6.0,
            LABEL_WIDTH + length + 6.0,
            y + 14.0,
            escape(&thousands(rate)),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_report() -> Report {
        let mut rows = vec![
            Row {
                name: "floor: decode+produce".into(),
                is_floor: true,
                events_per_second: Some(300_000.0),
                per_core_events_per_second: Some(290_000.0),
                cpu_seconds_per_million: Some(3.45),
                ..Row::default()
            },
            Row {
                name: "collector".into(),
                events_per_second: Some(250_000.0),
                per_core_events_per_second: Some(400_000.0),
                cpu_seconds_per_million: Some(2.5),
                floor: Some("floor: decode+produce".into()),
                checks: vec![Check::new("≥ 500,000/core", false)],
                notes: vec!["peak RSS 80 MiB".into()],
                ..Row::default()
            },
            Row {
                name: "ingestor <cql & kafka>".into(),
                events_per_second: Some(45_000.0),
                per_core_events_per_second: Some(282_000.0),
                floor: Some("floor: cql write".into()),
                checks: vec![Check::new("≥ 400,000/core", false), Check::new("wall ≥ 150,000/s", true)],
                ..Row::default()
            },
            Row {
                name: "query".into(),
                checks: vec![Check::new("summed p99 < 5 ms at 1k req/s", true)],
                notes: vec!["summed p50 1.3 ms, p99 3.8 ms".into()],
                ..Row::default()
            },
        ];
        fill_ratios(&mut rows);
        Report {
            machine: "2 cores, shared".into(),
            scale: 0.1,
            started_at: "2026-11-29T12:00:00Z".into(),
            wall_seconds: 95.0,
            rows,
        }
    }

    #[test]
    fn ratios_compare_per_core_rates_with_the_named_floor() {
        let report = fixed_report();
        let collector = &report.rows[1];
        assert!((collector.ratio_to_floor.unwrap() - 400_000.0 / 290_000.0).abs() < 1e-9);
        assert_eq!(report.rows[2].ratio_to_floor, None, "its floor was not measured");
        assert_eq!(report.rows[0].ratio_to_floor, None, "a floor has no floor");
        let mut rates_only = vec![
            Row { name: "f".into(), events_per_second: Some(200.0), ..Row::default() },
            Row {
                name: "s".into(),
                events_per_second: Some(50.0),
                per_core_events_per_second: Some(10.0),
                floor: Some("f".into()),
                ..Row::default()
            },
        ];
        fill_ratios(&mut rates_only);
        assert_eq!(rates_only[1].ratio_to_floor, Some(0.25), "events/s when the floor has no per-core rate");
    }

    #[test]
    fn the_table_has_a_line_per_row_with_its_figures() {
        let table = render_table(&fixed_report());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 4, "{table}");
        assert!(lines.iter().all(|line| line.starts_with('|') && line.ends_with('|')), "{table}");
        let columns = lines[0].matches('|').count();
        assert!(lines.iter().all(|line| line.matches('|').count() == columns), "{table}");
        assert_eq!(
            lines[3],
            "| collector | 250,000 | 400,000 | 2.50 | 1.38× decode+produce | ≥ 500,000/core | no | peak RSS 80 MiB |"
        );
        assert!(lines[4].contains("| 1 of 2 |"), "{}", lines[4]);
        assert!(
            lines[5].starts_with("| query | — | — | — | — | summed p99 < 5 ms at 1k req/s | yes |"),
            "{}",
            lines[5]
        );
    }

    #[test]
    fn the_json_holds_every_row_and_check() {
        let json = to_json(&fixed_report());
        let parsed: serde_json::Value = serde_json::from_str(&json.to_string()).unwrap();
        assert_eq!(parsed["scale"], 0.1);
        let rows = parsed["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1]["name"], "collector");
        assert_eq!(rows[1]["per_core_events_per_second"], 400_000.0);
        assert_eq!(rows[1]["checks"][0]["met"], false);
        assert_eq!(rows[3]["events_per_second"], serde_json::Value::Null);
    }

    #[test]
    fn the_chart_is_well_formed_svg_with_a_bar_per_rate() {
        let svg = render_svg(&fixed_report());
        check_well_formed(&svg);
        // Collector, its floor, the ingestor; the query has no rate and the floor is not repeated.
        assert_eq!(svg.matches("<rect ").count(), 1 + 3, "{svg}");
        let collector = svg.find(">collector<").unwrap();
        let floor = svg.find(">floor: decode+produce<").unwrap();
        let ingestor = svg.find(">ingestor &lt;cql &amp; kafka&gt;<").unwrap();
        assert!(collector < floor && floor < ingestor, "each stage is followed by its floor");
        assert!(svg.contains(">400,000<") && svg.contains(">290,000<"));
        check_well_formed(&render_svg(&Report::default()));
    }

    #[test]
    fn the_checker_refuses_what_is_not_well_formed() {
        for broken in ["<a><b></a></b>", "<a>", "<a x=1/>", "<a>&</a>", "<a/><b/>", "<a>x < y</a>"] {
            assert!(std::panic::catch_unwind(|| check_well_formed(broken)).is_err(), "{broken}");
        }
    }

    /// Panics unless `xml` is one well-formed element (after an optional declaration): tags nest and
    /// close, attribute values are quoted, and text has no bare `<` or `&`.
    fn check_well_formed(xml: &str) {
        let mut rest = xml.trim();
        if let Some(after) = rest.strip_prefix("<?xml") {
            rest = after.split_once("?>").expect("declaration closed").1.trim_start();
        }
        let mut open: Vec<String> = Vec::new();
        let mut roots = 0;
        while !rest.is_empty() {
            if let Some(tag) = rest.strip_prefix('<') {
                let (inside, after) = tag.split_once('>').expect("tag closed");
                rest = after;
                if let Some(name) = inside.strip_prefix('/') {
                    assert_eq!(open.pop().as_deref(), Some(name.trim()), "closing tag matches");
                    continue;
                }
                let self_closing = inside.ends_with('/');
                let inside = inside.trim_end_matches('/');
                let (name, mut attributes) = inside.split_once(' ').unwrap_or((inside, ""));
                assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()), "tag name {name:?}");
                while !attributes.trim().is_empty() {
                    let (key, value) = attributes.trim_start().split_once('=').expect("attribute has a value");
                    assert!(!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'));
                    let value = value.strip_prefix('"').expect("attribute value quoted");
                    let (text, after) = value.split_once('"').expect("attribute value closed");
                    check_text(text);
                    attributes = after;
                }
                if open.is_empty() {
                    roots += 1;
                }
                if !self_closing {
                    open.push(name.to_owned());
                }
            } else {
                let (text, after) = rest.split_at(rest.find('<').unwrap_or(rest.len()));
                assert!(!open.is_empty() || text.trim().is_empty(), "text outside the root");
                check_text(text);
                rest = after;
            }
        }
        assert!(open.is_empty(), "unclosed {open:?}");
        assert_eq!(roots, 1, "one root element");
    }

    fn check_text(text: &str) {
        assert!(!text.contains('<'), "bare < in {text:?}");
        for (index, _) in text.match_indices('&') {
            let entity = &text[index..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|known| entity.starts_with(known)),
                "bare & in {text:?}"
            );
        }
    }
}
