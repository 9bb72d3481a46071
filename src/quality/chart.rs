//! A small SVG scatter/line chart: points with labels, horizontal
//! reference lines, linear or logarithmic y. Pure string building, no
//! scripts or fonts, so the page it sits in is self-contained.

use std::fmt::Write;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 340.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// One point.
#[derive(Debug, Clone)]
pub struct Point {
    /// Shown beside the point and in its tooltip.
    pub label: String,
    /// Horizontal value.
    pub x: f64,
    /// Vertical value.
    pub y: f64,
    /// CSS classes (`published`, `chosen`, `over`, …), also drawn by the
    /// page's stylesheet.
    pub classes: Vec<&'static str>,
}

/// A horizontal line across the plot (a budget, a reference).
#[derive(Debug, Clone)]
pub struct HLine {
    /// Where.
    pub y: f64,
    /// Its caption.
    pub label: String,
    /// Its CSS class (`budget`, `reference`).
    pub class: &'static str,
}

/// A chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// Logarithmic y (KLD spans decades).
    pub log_y: bool,
    /// Join the points in x order (a history).
    pub connect: bool,
    /// Category labels for x instead of numbers (versions).
    pub x_categories: Option<Vec<String>>,
    /// The points.
    pub points: Vec<Point>,
    /// Horizontal lines.
    pub lines: Vec<HLine>,
}

struct Scale {
    lo: f64,
    hi: f64,
    px_lo: f64,
    px_hi: f64,
    log: bool,
}

impl Scale {
    fn new(values: impl Iterator<Item = f64>, log: bool, px_lo: f64, px_hi: f64) -> Scale {
        let vals: Vec<f64> = values
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .map(|v| if log { v.log10() } else { v })
            .collect();
        let (mut lo, mut hi) = vals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        let pad = if hi > lo { (hi - lo) * 0.08 } else { 0.5 };
        Scale {
            lo: lo - pad,
            hi: hi + pad,
            px_lo,
            px_hi,
            log,
        }
    }

    fn raw(&self, v: f64) -> f64 {
        if self.log {
            v.max(1e-12).log10()
        } else {
            v
        }
    }

    fn px(&self, v: f64) -> f64 {
        let t = ((self.raw(v) - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0);
        self.px_lo + t * (self.px_hi - self.px_lo)
    }

    /// Tick values (in data units): powers of ten on a log axis, a 1-2-5
    /// step on a linear one.
    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (self.lo.ceil() as i32, self.hi.floor() as i32);
            return (a..=b).map(|e| 10f64.powi(e)).collect();
        }
        let span = self.hi - self.lo;
        let raw = span / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(mag * 10.0);
        let first = (self.lo / step).ceil() as i64;
        // Multiples of the step, rounded so that 0.1 * 352 prints as 35.2.
        (first..)
            .map(|k| (k as f64 * step / mag * 1e3).round() / 1e3 * mag)
            .take_while(|t| *t <= self.hi)
            .take(12)
            .collect()
    }
}

/// Formats a value for a tick or a label without noise digits.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_string()
    }
}

/// Escapes text for HTML/SVG content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Chart {
    /// The `<svg>` element.
    pub fn render(&self) -> String {
        let xs = Scale::new(self.points.iter().map(|p| p.x), false, LEFT, WIDTH - RIGHT);
        let ys = Scale::new(
            self.points
                .iter()
                .map(|p| p.y)
                .chain(self.lines.iter().map(|l| l.y)),
            self.log_y,
            HEIGHT - BOTTOM,
            TOP,
        );
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"#,
            escape(&self.title)
        );
        let _ = write!(
            s,
            r#"<text class="title" x="{}" y="22" text-anchor="middle">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        self.axes(&mut s, &xs, &ys);
        // Budgets are captioned on the right, references on the left, so
        // that two lines close together keep readable captions.
        for l in &self.lines {
            let y = ys.px(l.y);
            let (lx, anchor) = if l.class == "reference" {
                (LEFT + 4.0, "start")
            } else {
                (WIDTH - RIGHT - 4.0, "end")
            };
            let _ = write!(
                s,
                r#"<line class="{}" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="line-label {}" x="{lx:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                l.class,
                WIDTH - RIGHT,
                l.class,
                y - 5.0,
                escape(&l.label)
            );
        }
        if self.connect && self.points.len() > 1 {
            let mut pts: Vec<&Point> = self.points.iter().collect();
            pts.sort_by(|a, b| a.x.total_cmp(&b.x));
            let path: Vec<String> = pts
                .iter()
                .filter(|p| p.x.is_finite() && p.y.is_finite())
                .map(|p| format!("{:.1},{:.1}", xs.px(p.x), ys.px(p.y)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline class="trend" points="{}"/>"#,
                path.join(" ")
            );
        }
        for p in self
            .points
            .iter()
            .filter(|p| p.x.is_finite() && p.y.is_finite())
        {
            let (x, y) = (xs.px(p.x), ys.px(p.y));
            let r = if p.classes.contains(&"chosen") {
                7.0
            } else {
                5.0
            };
            // Labels near the right edge go on the point's left.
            let (lx, anchor) = if x > WIDTH - RIGHT - 70.0 {
                (x - 8.0, "end")
            } else {
                (x + 8.0, "start")
            };
            let _ = write!(
                s,
                r#"<g class="point {}" data-label="{}"><circle cx="{x:.1}" cy="{y:.1}" r="{r}"><title>{}: {} = {}, {} = {}</title></circle><text x="{lx:.1}" y="{:.1}" text-anchor="{anchor}">{}</text></g>"#,
                p.classes.join(" "),
                escape(&p.label),
                escape(&p.label),
                escape(&self.x_label),
                short(p.x),
                escape(&self.y_label),
                short(p.y),
                y - 8.0,
                escape(&p.label)
            );
        }
        s.push_str("</svg>");
        s
    }

    fn axes(&self, s: &mut String, xs: &Scale, ys: &Scale) {
        let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP);
        let _ = write!(
            s,
            r#"<line class="axis" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/><line class="axis" x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}"/>"#
        );
        for t in ys.ticks() {
            let y = ys.px(t);
            let _ = write!(
                s,
                r#"<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                x0 - 6.0,
                y + 4.0,
                short(t)
            );
        }
        match &self.x_categories {
            Some(cats) => {
                for (i, c) in cats.iter().enumerate() {
                    let _ = write!(
                        s,
                        r#"<text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                        xs.px(i as f64),
                        y0 + 18.0,
                        escape(c)
                    );
                }
            }
            None => {
                for t in xs.ticks() {
                    let _ = write!(
                        s,
                        r#"<text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                        xs.px(t),
                        y0 + 18.0,
                        short(t)
                    );
                }
            }
        }
        let _ = write!(
            s,
            r#"<text class="axis-label" x="{}" y="{}" text-anchor="middle">{}</text><text class="axis-label" transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            HEIGHT - 10.0,
            escape(&self.x_label),
            (y0 + y1) / 2.0,
            escape(&self.y_label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, f64)>, log_y: bool) -> Chart {
        Chart {
            title: "t <&>".into(),
            x_label: "bits per weight".into(),
            y_label: "KLD".into(),
            log_y,
            connect: false,
            x_categories: None,
            points: points
                .into_iter()
                .enumerate()
                .map(|(i, (x, y))| Point {
                    label: format!("p{i}"),
                    x,
                    y,
                    classes: vec!["published"],
                })
                .collect(),
            lines: vec![HLine {
                y: 0.05,
                label: "budget".into(),
                class: "budget",
            }],
        }
    }

    #[test]
    fn points_stay_inside_the_plot_and_text_is_escaped() {
        let svg = chart(vec![(3.0, 0.3), (4.9, 0.03), (8.5, 0.0013)], true).render();
        assert!(svg.contains("t &lt;&amp;&gt;"), "{svg}");
        assert_eq!(svg.matches("<g class=\"point").count(), 3);
        assert_eq!(svg.matches("class=\"budget\"").count(), 1);
        for cap in regex::Regex::new(r#"cx="([\d.]+)" cy="([\d.]+)""#)
            .expect("regex")
            .captures_iter(&svg)
        {
            let x: f64 = cap[1].parse().expect("x");
            let y: f64 = cap[2].parse().expect("y");
            assert!((LEFT..=WIDTH - RIGHT).contains(&x), "{x}");
            assert!((TOP..=HEIGHT - BOTTOM).contains(&y), "{y}");
        }
    }

    #[test]
    fn degenerate_data_still_draws() {
        for pts in [vec![], vec![(4.0, 0.0)], vec![(4.0, f64::NAN), (5.0, 0.1)]] {
            let svg = chart(pts, true).render();
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn ticks_are_round_numbers() {
        let s = Scale::new([35.0, 36.2].into_iter(), false, 0.0, 1.0);
        let t = s.ticks();
        assert!(t.len() >= 2, "{t:?}");
        assert!(
            t.iter()
                .all(|v| ((v * 10.0).round() - v * 10.0).abs() < 1e-9),
            "{t:?}"
        );
        let l = Scale::new([0.0013, 0.3].into_iter(), true, 0.0, 1.0);
        assert_eq!(l.ticks(), vec![0.001, 0.01, 0.1]);
    }
}
