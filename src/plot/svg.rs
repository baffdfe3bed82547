//! The few SVG pieces the plots share: escaping, a linear scale with round tick values,
//! and a frame with axes, grid, tick labels, title and legend. Hand-written, as the HTML
//! report's plots are, so a plot is one self-contained string with no dependencies.

use std::fmt::Write as _;

/// Escapes text for SVG content and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A value range mapped linearly onto a pixel range (y grows downwards in SVG, so a y
/// scale maps `lo` to the bottom pixel).
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Smallest value shown.
    pub lo: f64,
    /// Largest value shown.
    pub hi: f64,
    /// Pixel of `lo`.
    pub from: f64,
    /// Pixel of `hi`.
    pub to: f64,
}

impl Scale {
    /// A scale over `[lo, hi]` (widened when empty) onto pixels `from..to`.
    pub fn new(lo: f64, hi: f64, from: f64, to: f64) -> Self {
        let (lo, hi) = if hi > lo && (hi - lo).is_finite() {
            (lo, hi)
        } else {
            (lo, lo + 1.0)
        };
        Scale { lo, hi, from, to }
    }

    /// The pixel of value `v`.
    pub fn px(&self, v: f64) -> f64 {
        self.from + (self.to - self.from) * (v - self.lo) / (self.hi - self.lo)
    }

    /// About `n` round tick values (1, 2 or 5 times a power of ten apart) inside the range.
    pub fn ticks(&self, n: usize) -> Vec<f64> {
        let span = self.hi - self.lo;
        let raw = span / n.max(1) as f64;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * mag);
        let mut out = Vec::new();
        let mut v = (self.lo / step).ceil() * step;
        while v <= self.hi + step * 1e-9 && out.len() < 50 {
            out.push(v);
            v += step;
        }
        out
    }
}

/// A tick label: at most three decimals, trailing zeros dropped (`0.5`, `12`, `0.125`).
pub fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// What goes around a plot's marks.
pub struct Frame<'a> {
    /// Whole image size in pixels.
    pub size: (f64, f64),
    /// Title on top.
    pub title: &'a str,
    /// Axis labels (x, y).
    pub labels: (&'a str, &'a str),
    /// Legend entries: (colour, shape element for a 12x12 box at the origin, text).
    pub legend: &'a [(&'a str, String, String)],
}

/// Opens an `<svg>` with a white background, title, grid, axes, tick labels and legend,
/// for marks drawn with `x` and `y`. The caller appends marks and `</svg>`.
pub fn open(f: &Frame<'_>, x: &Scale, y: &Scale) -> String {
    let (w, h) = f.size;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\" font-family=\"sans-serif\"><title>{t}</title><rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>",
        t = esc(f.title)
    );
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        x.from,
        esc(f.title)
    );
    for v in x.ticks(8) {
        let px = x.px(v);
        let _ = write!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#e4e4e4\"/><text x=\"{px:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            y.to,
            y.from,
            y.from + 15.0,
            num(v)
        );
    }
    for v in y.ticks(8) {
        let py = y.px(v);
        let _ = write!(
            s,
            "<line x1=\"{:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#e4e4e4\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            x.from,
            x.to,
            x.from - 6.0,
            py + 4.0,
            num(v)
        );
    }
    let _ = write!(
        s,
        "<path d=\"M{:.1} {:.1}V{:.1}H{:.1}\" fill=\"none\" stroke=\"#444\"/>",
        x.from, y.to, y.from, x.to
    );
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
        (x.from + x.to) / 2.0,
        y.from + 34.0,
        esc(f.labels.0)
    );
    let _ = write!(
        s,
        "<text transform=\"translate(16 {:.1}) rotate(-90)\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
        (y.from + y.to) / 2.0,
        esc(f.labels.1)
    );
    let mut lx = x.from;
    for (colour, shape, text) in f.legend {
        let _ = write!(
            s,
            "<g transform=\"translate({lx:.1} 30)\" stroke=\"{colour}\" fill=\"{colour}\">{shape}</g><text x=\"{:.1}\" y=\"40\" font-size=\"11\">{}</text>",
            lx + 16.0,
            esc(text)
        );
        lx += 24.0 + 6.2 * text.chars().count() as f64;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside() {
        let s = Scale::new(0.0, 7.3, 0.0, 100.0);
        assert_eq!(s.ticks(8), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        let s = Scale::new(3.0, 3.0, 0.0, 100.0);
        assert!(!s.ticks(5).is_empty());
        assert_eq!(Scale::new(0.0, 10.0, 100.0, 0.0).px(2.5), 75.0);
        assert_eq!(esc("<a&\">"), "&lt;a&amp;&quot;&gt;");
        assert_eq!(
            [num(0.5), num(12.0), num(0.125), num(2000.0), num(-0.0)],
            ["0.5", "12", "0.125", "2000", "0"]
        );
    }
}
