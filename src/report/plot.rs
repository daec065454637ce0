//! Figures for run reports: per-round loss bands and the network picture.
//!
//! Every figure is written twice, as `<base>.svg` and `<base>.png`, by one drawing routine that
//! is generic over the plotters backend, so both files always show the same picture.
//!
//! Text is set in DejaVu Sans, embedded in the binary (`assets/DejaVuSans.ttf`, license in
//! `assets/DejaVuSans-LICENSE.txt`) and registered with plotters' `ab_glyph` font table, so PNG
//! output never depends on system fonts or fontconfig. This needs plotters built with
//! `default-features = false` and the `ab_glyph` feature; if anything in the dependency graph turns
//! on plotters' `ttf` feature, plotters measures text with system fonts instead.
//!
//! PNG text is rasterised here (`PngBackend`) rather than by plotters 0.3.7, whose `ab_glyph`
//! renderer drops each glyph's left side bearing and so spaces letters unevenly ("rou nd").

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, DrawingErrorKind};

/// One rule's curve: per-round statistics over honest nodes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LossSeries {
    /// Name of the rule, e.g. "loss-filtered"; used as the panel title.
    pub label: String,
    /// Mean loss of honest nodes; index = round.
    pub mean: Vec<f64>,
    /// Minimum loss of honest nodes; index = round.
    pub min: Vec<f64>,
    /// Maximum loss of honest nodes; index = round.
    pub max: Vec<f64>,
}

/// A node of the network picture.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkNode {
    pub x: f64,
    pub y: f64,
    pub cluster: usize,
    pub byzantine: bool,
    pub label: String,
}

/// Why a figure could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The folder that should hold the figure could not be created.
    #[error("cannot create folder `{path}`: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Drawing or encoding the figure failed.
    #[error("cannot draw `{path}`: {message}")]
    Draw { path: PathBuf, message: String },
    /// The embedded font could not be parsed (a broken build, not a run-time condition).
    #[error("cannot load the embedded font for `{path}`")]
    Font { path: PathBuf },
}

/// Loss figure size in pixels.
const LOSS_SIZE: (u32, u32) = (1200, 800);
/// Network figure size in pixels.
const NETWORK_SIZE: (u32, u32) = (800, 800);
/// Smallest value shown on a log axis; smaller values, zero and negatives are drawn at the
/// axis floor.
const LOG_FLOOR: f64 = 1e-6;
/// Draw node labels only up to this many nodes; beyond that they would cover each other.
const MAX_LABELLED_NODES: usize = 50;
/// At most this many clusters get their own legend entry.
const MAX_LEGEND_CLUSTERS: usize = 12;

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/DejaVuSans.ttf"
));

/// Tableau-10 palette; used for loss series.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Cluster colours: the palette without its red, which marks Byzantine nodes.
const CLUSTER_PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const BYZANTINE_RED: RGBColor = RGBColor(220, 20, 20);
const EDGE_GREY: RGBColor = RGBColor(150, 150, 150);
const DARK: RGBColor = RGBColor(40, 40, 40);

/// Writes `<base>.svg` and `<base>.png`: the mean and the min-max band of honest nodes' loss per
/// round on a log-scale y axis, one panel per series laid out in a grid, each titled with its
/// label, x axis "round", y axis "loss". All panels share both axes so they can be compared.
///
/// Non-finite values leave a gap; values at or below zero (or below 1e-6) are drawn at the bottom
/// of the axis. Returns the written paths, SVG first.
pub fn loss_bands(
    base: &Path,
    title: &str,
    series: &[LossSeries],
) -> Result<Vec<PathBuf>, PlotError> {
    render(base, LOSS_SIZE, &LossFigure { title, series })
}

/// Writes `<base>.svg` and `<base>.png`: nodes at their positions coloured by cluster, Byzantine
/// nodes in red (larger, drawn on top), undirected edges as thin grey lines, equal aspect ratio and
/// a small legend under the picture.
///
/// Nodes with a non-finite position are left out, as are edges that touch them, self-loops and
/// edges with an index out of range. Returns the written paths, SVG first.
pub fn network(
    base: &Path,
    title: &str,
    nodes: &[NetworkNode],
    edges: &[(usize, usize)],
) -> Result<Vec<PathBuf>, PlotError> {
    render(
        base,
        NETWORK_SIZE,
        &NetworkFigure {
            title,
            nodes,
            edges,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Shared rendering
// ---------------------------------------------------------------------------------------------

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A figure that can be drawn on any plotters backend.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Registers the embedded font with plotters once per process and returns it parsed, for
/// [`PngBackend`]; `None` only if the embedded file were not a font.
fn embedded_font() -> Option<&'static FontRef<'static>> {
    static FONT_REF: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT_REF
        .get_or_init(|| {
            let registered = ["sans-serif", "serif", "monospace"]
                .iter()
                .all(|name| register_font(name, FontStyle::Normal, FONT_BYTES).is_ok());
            if registered {
                FontRef::try_from_slice(FONT_BYTES).ok()
            } else {
                None
            }
        })
        .as_ref()
}

/// `<base>.<ext>`, appending rather than replacing any dot-part of the base name.
fn with_suffix(base: &Path, ext: &str) -> PathBuf {
    let mut name: OsString = base.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

fn draw_error(path: &Path, message: impl std::fmt::Display) -> PlotError {
    PlotError::Draw {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn render(base: &Path, size: (u32, u32), figure: &impl Figure) -> Result<Vec<PathBuf>, PlotError> {
    let svg = with_suffix(base, "svg");
    let png = with_suffix(base, "png");
    let Some(font) = embedded_font() else {
        return Err(PlotError::Font { path: png });
    };
    if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| PlotError::CreateDir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        figure.draw(&root).map_err(|e| draw_error(&svg, e))?;
        root.present().map_err(|e| draw_error(&svg, e))?;
    }
    {
        let root = PngBackend {
            inner: BitMapBackend::new(&png, size),
            font,
        }
        .into_drawing_area();
        figure.draw(&root).map_err(|e| draw_error(&png, e))?;
        root.present().map_err(|e| draw_error(&png, e))?;
    }
    Ok(vec![svg, png])
}

/// A [`BitMapBackend`] that rasterises text itself with the embedded font, placing every glyph at
/// its true outline position; everything else is passed through unchanged.
struct PngBackend<'a> {
    inner: BitMapBackend<'a>,
    font: &'static FontRef<'static>,
}

impl<'a> DrawingBackend for PngBackend<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    /// Same anchoring and layout box as plotters' default `draw_text` (so PNG and SVG agree), but
    /// glyphs are placed by their pixel bounds and the cap height is centred in the layout box.
    fn draw_text<TStyle: plotters_backend::BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha <= 0.0 || text.is_empty() {
            return Ok(());
        }
        let ((min_x, min_y), (max_x, max_y)) = style
            .layout_box(text)
            .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (max_x - min_x, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let scaled = self.font.as_scaled(PxScale::from(style.size() as f32));
        let cap_height = scaled
            .outline_glyph(scaled.scaled_glyph('H'))
            .map(|g| -g.px_bounds().min.y)
            .unwrap_or(scaled.ascent() * 0.75);
        let baseline = height as f32 / 2.0 + cap_height / 2.0;

        let mut coverage: Vec<(i32, i32, f32)> = Vec::new();
        let mut caret = 0f32;
        let mut previous = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = previous {
                caret += scaled.kern(p, id);
            }
            previous = Some(id);
            let glyph =
                id.with_scale_and_position(scaled.scale(), ab_glyph::point(caret, baseline));
            if let Some(outline) = scaled.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                let (gx, gy) = (bounds.min.x as i32, bounds.min.y as i32);
                outline.draw(|x, y, v| coverage.push((gx + x as i32, gy + y as i32, v)));
            }
            caret += scaled.h_advance(id);
        }

        let transform = style.transform();
        let (w, h) = self.inner.get_size();
        for (x, y, v) in coverage {
            if v <= 0.0 {
                continue;
            }
            let (tx, ty) = transform.transform(x + dx - min_x, y + dy - min_y);
            let (px, py) = (pos.0 + tx, pos.1 + ty);
            if px >= 0 && py >= 0 && px < w as i32 && py < h as i32 {
                let alpha = color.alpha * f64::from(v.min(1.0));
                self.inner.draw_pixel(
                    (px, py),
                    BackendColor {
                        alpha,
                        rgb: color.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}

fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
}

fn font_colored(size: f64, color: &'static RGBColor) -> TextStyle<'static> {
    font(size).color(color)
}

// ---------------------------------------------------------------------------------------------
// Loss bands
// ---------------------------------------------------------------------------------------------

struct LossFigure<'a> {
    title: &'a str,
    series: &'a [LossSeries],
}

/// Axis ranges shared by all panels; `y` spans whole decades.
struct LossAxes {
    x: (f64, f64),
    y: (f64, f64),
}

impl LossAxes {
    fn decades(&self) -> f64 {
        (self.y.1 / self.y.0).log10().round()
    }
}

impl LossFigure<'_> {
    fn rounds(&self) -> usize {
        self.series
            .iter()
            .map(|s| s.mean.len().max(s.min.len()).max(s.max.len()))
            .max()
            .unwrap_or(0)
    }

    fn axes(&self) -> LossAxes {
        let rounds = self.rounds();
        let x = if rounds <= 1 {
            (-0.5, 0.5)
        } else {
            (0.0, nice_ceil((rounds - 1) as f64))
        };
        let positive = self
            .series
            .iter()
            .flat_map(|s| s.mean.iter().chain(&s.min).chain(&s.max))
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0);
        let (lo, hi) = positive.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let y = if lo.is_finite() && hi.is_finite() {
            let lo = lo.max(LOG_FLOOR);
            let hi = hi.max(lo);
            // Whole decades, so the log axis always has labelled ticks at both ends.
            let lo_dec = lo.log10().floor();
            // 1e300 keeps 10^hi_dec finite even for values near f64::MAX.
            let mut hi_dec = hi.log10().ceil().min(300.0);
            if hi_dec <= lo_dec {
                hi_dec = lo_dec + 1.0;
            }
            (10f64.powf(lo_dec), 10f64.powf(hi_dec))
        } else {
            (1e-3, 10.0)
        };
        LossAxes { x, y }
    }
}

/// `v` rounded up to two significant digits (499 -> 500, 99 -> 99, 1234 -> 1300), so the last
/// round gets a tick label without leaving much empty space.
fn nice_ceil(v: f64) -> f64 {
    if !(v.is_finite() && v > 10.0) {
        return v;
    }
    let step = 10f64.powf(v.log10().floor() - 1.0);
    (v / step - 1e-9).ceil() * step
}

/// Runs of consecutive rounds whose values are all present, as (round, value...) points.
fn runs<T>(len: usize, value: impl Fn(usize) -> Option<T>) -> Vec<Vec<(f64, T)>> {
    let mut out: Vec<Vec<(f64, T)>> = Vec::new();
    let mut current: Vec<(f64, T)> = Vec::new();
    for i in 0..len {
        match value(i) {
            Some(v) => current.push((i as f64, v)),
            None => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A finite value clamped into the visible range of the log axis, or `None` for NaN and infinities.
fn on_log_axis(v: Option<&f64>, (lo, hi): (f64, f64)) -> Option<f64> {
    v.copied()
        .filter(|v| v.is_finite())
        .map(|v| v.clamp(lo, hi))
}

/// Tick label on the log axis: decades always; 2 and 5 times a decade too when `fine`.
fn log_tick_label(v: f64, fine: bool) -> String {
    if !(v.is_finite() && v > 0.0) {
        return String::new();
    }
    let exp = v.log10().floor();
    let mantissa = v / 10f64.powf(exp);
    let near = |m: f64| (mantissa - m).abs() < 1e-6 * m;
    let (m, exp) = if near(10.0) {
        (1u32, exp + 1.0)
    } else if near(1.0) {
        (1, exp)
    } else if fine && near(2.0) {
        (2, exp)
    } else if fine && near(5.0) {
        (5, exp)
    } else {
        return String::new();
    };
    let e = exp as i32;
    if (-4..=5).contains(&e) {
        let value = f64::from(m) * 10f64.powi(e);
        format!("{:.*}", (-e).max(0) as usize, value)
    } else {
        format!("{m}e{e}")
    }
}

fn round_label(v: f64) -> String {
    if v.is_finite() && (v - v.round()).abs() < 1e-9 && v.round() >= 0.0 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

impl Figure for LossFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let body = root.titled(self.title, font(30.0))?;
        if self.series.is_empty() {
            let (w, h) = body.dim_in_pixel();
            body.draw_text(
                "no data",
                &font_colored(24.0, &DARK).pos(Pos::new(HPos::Center, VPos::Center)),
                (w as i32 / 2, h as i32 / 2),
            )?;
            return Ok(());
        }
        let (legend, grid) = body.split_vertically(LOSS_LEGEND_H);
        draw_loss_legend(&legend)?;
        let n = self.series.len();
        let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
        let rows = n.div_ceil(cols);
        let panels = grid.split_evenly((rows, cols));
        let axes = self.axes();
        for ((index, series), panel) in self.series.iter().enumerate().zip(&panels) {
            let color = PALETTE[index % PALETTE.len()];
            draw_loss_panel(panel, series, color, &axes)?;
        }
        Ok(())
    }
}

const LOSS_LEGEND_H: i32 = 30;

/// One legend for all panels, under the title: what the line and the shaded band mean.
fn draw_loss_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
    let style = font_colored(16.0, &DARK);
    let line_text = "mean over honest nodes";
    let band_text = "min to max over honest nodes";
    let (line_w, _) = area.estimate_text_size(line_text, &style)?;
    let (band_w, _) = area.estimate_text_size(band_text, &style)?;
    let (mark, pad, gap) = (30, 8, 40);
    let total = 2 * (mark + pad) + gap + line_w as i32 + band_w as i32;
    let (w, h) = area.dim_in_pixel();
    let y = h as i32 / 2;
    let mut x = (w as i32 - total) / 2;
    area.draw(&PathElement::new(
        vec![(x, y), (x + mark, y)],
        DARK.stroke_width(2),
    ))?;
    x += mark + pad;
    let left = style.pos(Pos::new(HPos::Left, VPos::Center));
    area.draw(&Text::new(line_text, (x, y), left.clone()))?;
    x += line_w as i32 + gap;
    area.draw(&Rectangle::new(
        [(x, y - 7), (x + mark, y + 7)],
        DARK.mix(0.25).filled(),
    ))?;
    x += mark + pad;
    area.draw(&Text::new(band_text, (x, y), left))?;
    Ok(())
}

fn draw_loss_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &LossSeries,
    color: RGBColor,
    axes: &LossAxes,
) -> DrawResult<DB> {
    let (x0, x1) = axes.x;
    let (y0, y1) = axes.y;
    // A hair wider than whole decades, so rounding never drops the end ticks.
    let y_range = (y0 * (1.0 - 1e-9))..(y1 * (1.0 + 1e-9));
    let mut chart = ChartBuilder::on(area)
        .caption(&series.label, font(22.0))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, y_range.log_scale())?;

    let fine = axes.decades() <= 2.0;
    let x_fmt = |v: &f64| round_label(*v);
    let y_fmt = |v: &f64| log_tick_label(*v, fine);
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("loss")
        .x_labels(8)
        .y_labels(if fine { 30 } else { 10 })
        .x_max_light_lines(2)
        .y_max_light_lines(if fine { 1 } else { 10 })
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(font(15.0))
        .axis_desc_style(font(17.0))
        .bold_line_style(RGBColor(205, 205, 205))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;

    let rounds_band = series.min.len().max(series.max.len());
    let band = runs(rounds_band, |i| {
        let lo = on_log_axis(series.min.get(i), axes.y)?;
        let hi = on_log_axis(series.max.get(i), axes.y)?;
        Some((lo.min(hi), lo.max(hi)))
    });
    for run in &band {
        let elements: Vec<DynElement<'static, DB, (f64, f64)>> = if run.len() >= 2 {
            let mut outline: Vec<(f64, f64)> = run.iter().map(|&(x, (_, hi))| (x, hi)).collect();
            outline.extend(run.iter().rev().map(|&(x, (lo, _))| (x, lo)));
            vec![Polygon::new(outline, color.mix(0.25).filled()).into_dyn()]
        } else {
            // A band one round wide would be invisible: draw it as a bar.
            run.iter()
                .map(|&(x, (lo, hi))| {
                    PathElement::new(vec![(x, lo), (x, hi)], color.mix(0.5).stroke_width(6))
                        .into_dyn()
                })
                .collect()
        };
        chart.draw_series(elements)?;
    }

    let mean = runs(series.mean.len(), |i| {
        on_log_axis(series.mean.get(i), axes.y)
    });
    for run in &mean {
        let elements: Vec<DynElement<'static, DB, (f64, f64)>> = if run.len() >= 2 {
            vec![PathElement::new(run.clone(), color.stroke_width(2)).into_dyn()]
        } else {
            run.iter()
                .map(|&p| Circle::new(p, 4, color.filled()).into_dyn())
                .collect()
        };
        chart.draw_series(elements)?;
    }

    if band.is_empty() && mean.is_empty() {
        chart.plotting_area().draw(&Text::new(
            "no data",
            ((x0 + x1) / 2.0, (y0 * y1).sqrt()),
            font_colored(20.0, &DARK).pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

struct NetworkFigure<'a> {
    title: &'a str,
    nodes: &'a [NetworkNode],
    edges: &'a [(usize, usize)],
}

enum LegendMark {
    Node(RGBColor, i32),
    Byzantine(i32),
    Edge,
    None,
}

struct LegendItem {
    mark: LegendMark,
    text: String,
}

fn cluster_color(cluster: usize) -> RGBColor {
    CLUSTER_PALETTE[cluster % CLUSTER_PALETTE.len()]
}

impl NetworkFigure<'_> {
    fn visible(&self, i: usize) -> Option<&NetworkNode> {
        self.nodes
            .get(i)
            .filter(|n| n.x.is_finite() && n.y.is_finite())
    }

    /// Square data window around all visible nodes, for an equal aspect ratio.
    fn window(&self) -> ((f64, f64), (f64, f64)) {
        let visible: Vec<&NetworkNode> = (0..self.nodes.len())
            .filter_map(|i| self.visible(i))
            .collect();
        if visible.is_empty() {
            return ((-1.0, 1.0), (-1.0, 1.0));
        }
        let (mut xmin, mut xmax, mut ymin, mut ymax) = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        for n in &visible {
            xmin = xmin.min(n.x);
            xmax = xmax.max(n.x);
            ymin = ymin.min(n.y);
            ymax = ymax.max(n.y);
        }
        let mut span = (xmax - xmin).max(ymax - ymin);
        if !(span.is_finite() && span > 0.0) {
            span = if span.is_finite() {
                (xmin.abs().max(ymin.abs())).max(1.0)
            } else {
                f64::MAX / 4.0
            };
        }
        let half = span * 0.54;
        let (cx, cy) = (xmin / 2.0 + xmax / 2.0, ymin / 2.0 + ymax / 2.0);
        ((cx - half, cx + half), (cy - half, cy + half))
    }

    fn node_radius(&self) -> i32 {
        match self.nodes.len() {
            0..=60 => 8,
            61..=200 => 6,
            201..=600 => 4,
            _ => 3,
        }
    }

    fn legend_items(&self, radius: i32) -> Vec<LegendItem> {
        let mut honest: BTreeMap<usize, usize> = BTreeMap::new();
        let mut clusters: BTreeSet<usize> = BTreeSet::new();
        let mut byzantine = 0usize;
        for n in self.nodes {
            clusters.insert(n.cluster);
            if n.byzantine {
                byzantine += 1;
            } else {
                *honest.entry(n.cluster).or_default() += 1;
            }
        }
        let mut items: Vec<LegendItem> = clusters
            .iter()
            .take(MAX_LEGEND_CLUSTERS)
            .map(|&c| LegendItem {
                mark: LegendMark::Node(cluster_color(c), radius),
                text: format!(
                    "cluster {c} ({} honest)",
                    honest.get(&c).copied().unwrap_or(0)
                ),
            })
            .collect();
        if clusters.len() > MAX_LEGEND_CLUSTERS {
            items.push(LegendItem {
                mark: LegendMark::None,
                text: format!("… {} clusters in all", clusters.len()),
            });
        }
        if byzantine > 0 {
            items.push(LegendItem {
                mark: LegendMark::Byzantine(radius + 2),
                text: format!("Byzantine ({byzantine})"),
            });
        }
        if !self.edges.is_empty() {
            items.push(LegendItem {
                mark: LegendMark::Edge,
                text: "link".to_string(),
            });
        }
        items
    }
}

/// A node marker: a filled disc with a dark rim (thicker for Byzantine nodes). Two filled circles
/// render cleaner in bitmaps than a stroked outline.
fn draw_disc<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    at: CT::From,
    radius: i32,
    fill: RGBColor,
    thick_rim: bool,
) -> DrawResult<DB>
where
    CT::From: Clone,
{
    let (rim, rim_width) = if thick_rim { (BLACK, 2) } else { (DARK, 1) };
    area.draw(&Circle::new(at.clone(), radius, rim.filled()))?;
    area.draw(&Circle::new(at, (radius - rim_width).max(1), fill.filled()))?;
    Ok(())
}

const LEGEND_ROW: i32 = 26;
const LEGEND_MARK_W: i32 = 24;
const LEGEND_GAP: i32 = 22;

/// Legend rows: each a list of (item index, x offset) and the row's width in pixels.
type LegendRows = Vec<(Vec<(usize, i32)>, i32)>;

/// Lays out legend items in centred rows; returns per-row lists of (item, x offset) and row widths.
fn layout_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    items: &[LegendItem],
    style: &TextStyle,
    width: i32,
) -> Result<LegendRows, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut rows: Vec<(Vec<(usize, i32)>, i32)> = Vec::new();
    let mut row: Vec<(usize, i32)> = Vec::new();
    let mut x = 0;
    for (i, item) in items.iter().enumerate() {
        let (tw, _) = area.estimate_text_size(&item.text, style)?;
        let w = LEGEND_MARK_W + 6 + tw as i32;
        if !row.is_empty() && x + w > width {
            rows.push((std::mem::take(&mut row), x - LEGEND_GAP));
            x = 0;
        }
        row.push((i, x));
        x += w + LEGEND_GAP;
    }
    if !row.is_empty() {
        rows.push((row, x - LEGEND_GAP));
    }
    Ok(rows)
}

impl Figure for NetworkFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let body = root.titled(self.title, font(28.0))?;
        let radius = self.node_radius();
        let items = self.legend_items(radius);
        let legend_style = font_colored(15.0, &DARK);
        let (bw, bh) = body.dim_in_pixel();
        let rows = layout_legend(&body, &items, &legend_style, bw as i32 - 40)?;
        let legend_h = rows.len() as i32 * LEGEND_ROW + if rows.is_empty() { 0 } else { 14 };
        let (picture, legend) = body.split_vertically(bh as i32 - legend_h);

        // Equal aspect ratio: a centred square.
        let (pw, ph) = picture.dim_in_pixel();
        let side = pw.min(ph);
        let left = (pw - side) / 2;
        let top = (ph - side) / 2;
        let square = picture.shrink((left, top), (side, side));

        let ((x0, x1), (y0, y1)) = self.window();
        let mut chart = ChartBuilder::on(&square)
            .margin(10)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_axes()
            .draw()?;
        chart.plotting_area().draw(&Rectangle::new(
            [(x0, y1), (x1, y0)],
            RGBColor(200, 200, 200).stroke_width(1),
        ))?;

        if self.nodes.is_empty() {
            chart.plotting_area().draw(&Text::new(
                "no nodes",
                ((x0 + x1) / 2.0, (y0 + y1) / 2.0),
                font_colored(22.0, &DARK).pos(Pos::new(HPos::Center, VPos::Center)),
            ))?;
        }

        // Edges, deduplicated as undirected pairs.
        let mut seen: BTreeSet<(usize, usize)> = BTreeSet::new();
        let edge_style = EDGE_GREY.mix(0.55).stroke_width(1);
        let edges = self.edges.iter().filter_map(|&(a, b)| {
            let key = (a.min(b), a.max(b));
            if a == b || !seen.insert(key) {
                return None;
            }
            let (na, nb) = (self.visible(a)?, self.visible(b)?);
            Some(PathElement::new(
                vec![(na.x, na.y), (nb.x, nb.y)],
                edge_style,
            ))
        });
        chart.draw_series(edges)?;

        // Honest nodes first, Byzantine nodes on top.
        let honest = self
            .nodes
            .iter()
            .filter(|n| !n.byzantine && n.x.is_finite() && n.y.is_finite());
        for n in honest {
            draw_disc(
                chart.plotting_area(),
                (n.x, n.y),
                radius,
                cluster_color(n.cluster),
                false,
            )?;
        }
        let byz_r = radius + 2;
        let byzantine = self
            .nodes
            .iter()
            .filter(|n| n.byzantine && n.x.is_finite() && n.y.is_finite());
        for n in byzantine {
            draw_disc(
                chart.plotting_area(),
                (n.x, n.y),
                byz_r,
                BYZANTINE_RED,
                true,
            )?;
        }

        if self.nodes.len() <= MAX_LABELLED_NODES {
            let label_style = font_colored(11.0, &DARK);
            for n in self
                .nodes
                .iter()
                .filter(|n| n.x.is_finite() && n.y.is_finite())
            {
                if n.label.is_empty() {
                    continue;
                }
                let r = if n.byzantine { byz_r } else { radius };
                let element = EmptyElement::at((n.x, n.y))
                    + Text::new(n.label.clone(), (r + 1, -r - 11), label_style.clone());
                chart.plotting_area().draw(&element)?;
            }
        }

        // Legend strip under the picture.
        let (lw, _) = legend.dim_in_pixel();
        for (row_index, (row, row_width)) in rows.iter().enumerate() {
            let y = 8 + row_index as i32 * LEGEND_ROW + LEGEND_ROW / 2;
            let start = (lw as i32 - row_width) / 2;
            for &(item_index, offset) in row {
                let Some(item) = items.get(item_index) else {
                    continue;
                };
                let x = start + offset;
                let mid = (x + LEGEND_MARK_W / 2, y);
                match item.mark {
                    LegendMark::Node(color, r) => {
                        draw_disc(&legend, mid, r, color, false)?;
                    }
                    LegendMark::Byzantine(r) => {
                        draw_disc(&legend, mid, r, BYZANTINE_RED, true)?;
                    }
                    LegendMark::Edge => {
                        legend.draw(&PathElement::new(
                            vec![(x, y), (x + LEGEND_MARK_W, y)],
                            EDGE_GREY.stroke_width(2),
                        ))?;
                    }
                    LegendMark::None => {}
                }
                legend.draw(&Text::new(
                    item.text.clone(),
                    (x + LEGEND_MARK_W + 6, y),
                    legend_style.pos(Pos::new(HPos::Left, VPos::Center)),
                ))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

    /// A fresh folder under the system temp dir, unique to this process and test.
    fn scratch(name: &str) -> Result<PathBuf, std::io::Error> {
        let dir = std::env::temp_dir().join(format!("byzmtl-plot-{}-{name}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Checks both files exist, are of reasonable size, and hold what they should.
    fn check(paths: &[PathBuf], svg_must_contain: &[&str]) -> TestResult {
        assert_eq!(paths.len(), 2, "{paths:?}");
        let svg = paths
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "svg"))
            .ok_or("no svg path")?;
        let png = paths
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "png"))
            .ok_or("no png path")?;
        let svg_text = std::fs::read_to_string(svg)?;
        let png_bytes = std::fs::read(png)?;
        assert!(svg_text.len() > 300, "svg too small: {}", svg_text.len());
        assert!(svg_text.starts_with("<svg") || svg_text.contains("<svg"));
        assert!(
            png_bytes.len() > 2_000,
            "png too small: {}",
            png_bytes.len()
        );
        assert!(png_bytes.starts_with(PNG_MAGIC), "not a png");
        for needle in svg_must_contain {
            assert!(svg_text.contains(needle), "svg lacks {needle:?}");
        }
        Ok(())
    }

    /// Deterministic pseudo-random numbers in [0, 1).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn synthetic_series(label: &str, rounds: usize, floor: f64, seed: u64) -> LossSeries {
        let mut rng = Lcg(seed);
        let mut s = LossSeries {
            label: label.to_string(),
            ..LossSeries::default()
        };
        for r in 0..rounds {
            let mean = floor + 5.0 * (-(r as f64) / 60.0).exp();
            let spread = 1.0 + 2.0 * rng.next();
            s.mean.push(mean);
            s.min.push(mean / spread);
            s.max.push(mean * spread);
        }
        s
    }

    fn synthetic_network(
        n: usize,
        clusters: usize,
        byzantine: usize,
    ) -> (Vec<NetworkNode>, Vec<(usize, usize)>) {
        let mut rng = Lcg(7);
        let nodes: Vec<NetworkNode> = (0..n)
            .map(|i| {
                let c = i % clusters;
                let angle = c as f64 / clusters as f64 * std::f64::consts::TAU;
                NetworkNode {
                    x: 3.0 * angle.cos() + rng.next() - 0.5,
                    y: 3.0 * angle.sin() + rng.next() - 0.5,
                    cluster: c,
                    byzantine: i % (n / byzantine.max(1)).max(1) == 0
                        && i / (n / byzantine.max(1)).max(1) < byzantine,
                    label: i.to_string(),
                }
            })
            .collect();
        let mut edges = Vec::new();
        for i in 0..n {
            for j in (i + 1)..n {
                let p = if nodes[i].cluster == nodes[j].cluster {
                    0.3
                } else {
                    0.01
                };
                if rng.next() < p {
                    edges.push((i, j));
                }
            }
        }
        (nodes, edges)
    }

    #[test]
    fn loss_bands_writes_svg_and_png() -> TestResult {
        let dir = scratch("loss")?;
        let series: Vec<LossSeries> = ["loss-filtered", "mean", "median", "trimmed-mean"]
            .iter()
            .enumerate()
            .map(|(i, l)| synthetic_series(l, 200, 0.05 * (i + 1) as f64, i as u64 + 1))
            .collect();
        let paths = loss_bands(&dir.join("loss"), "synthetic loss", &series)?;
        assert_eq!(paths, vec![dir.join("loss.svg"), dir.join("loss.png")]);
        check(
            &paths,
            &[
                "synthetic loss",
                "loss-filtered",
                "median",
                "trimmed-mean",
                "round",
                "mean over honest nodes",
            ],
        )?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn loss_bands_survives_bad_values() -> TestResult {
        let dir = scratch("loss-bad")?;
        let mut weird = synthetic_series("weird", 50, 0.1, 3);
        weird.mean[3] = f64::NAN;
        weird.mean[4] = 0.0;
        weird.min[5] = -1.0;
        weird.max[6] = f64::INFINITY;
        weird.min[7] = f64::NEG_INFINITY;
        weird.max[10] = 1e-30;
        weird.min.truncate(40);
        let series = vec![
            weird,
            LossSeries {
                label: "empty".into(),
                ..LossSeries::default()
            },
            LossSeries {
                label: "one-round".into(),
                mean: vec![0.5],
                min: vec![0.2],
                max: vec![0.9],
            },
            LossSeries {
                label: "all-nan".into(),
                mean: vec![f64::NAN; 10],
                min: vec![f64::NAN; 10],
                max: vec![f64::NAN; 10],
            },
            LossSeries {
                label: "non-positive".into(),
                mean: vec![0.0, -1.0, 0.0],
                min: vec![-2.0; 3],
                max: vec![0.0; 3],
            },
        ];
        let paths = loss_bands(&dir.join("bad"), "bad values", &series)?;
        check(
            &paths,
            &[
                "weird",
                "empty",
                "one-round",
                "all-nan",
                "non-positive",
                "no data",
            ],
        )?;

        // A single round alone, every value invalid, and no series at all.
        let single = vec![LossSeries {
            label: "single".into(),
            mean: vec![2.0],
            min: vec![2.0],
            max: vec![2.0],
        }];
        check(
            &loss_bands(&dir.join("single"), "single", &single)?,
            &["single"],
        )?;
        let invalid = vec![LossSeries {
            label: "invalid".into(),
            mean: vec![f64::NAN, 0.0],
            min: vec![-1.0, f64::INFINITY],
            max: vec![0.0, f64::NAN],
        }];
        check(
            &loss_bands(&dir.join("invalid"), "invalid", &invalid)?,
            &["invalid"],
        )?;
        check(
            &loss_bands(&dir.join("none"), "nothing", &[])?,
            &["nothing", "no data"],
        )?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn extreme_values_do_not_panic() -> TestResult {
        let dir = scratch("extreme")?;
        let series = vec![LossSeries {
            label: "extreme".into(),
            mean: vec![f64::MIN_POSITIVE, 1e-300, 1.0, f64::MAX, 1e308],
            min: vec![f64::MIN_POSITIVE; 5],
            max: vec![f64::MAX; 5],
        }];
        check(
            &loss_bands(&dir.join("loss"), "extreme", &series)?,
            &["extreme"],
        )?;
        let nodes: Vec<NetworkNode> = [
            (-1e300, 0.0),
            (1e300, 1.0),
            (f64::MAX, f64::MIN),
            (0.0, 1e-300),
        ]
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| NetworkNode {
            x,
            y,
            cluster: i,
            byzantine: i == 0,
            label: format!("far{i}"),
        })
        .collect();
        check(
            &network(&dir.join("net"), "extreme", &nodes, &[(0, 1), (2, 3)])?,
            &["far1"],
        )?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn network_writes_svg_and_png() -> TestResult {
        let dir = scratch("net")?;
        let (nodes, edges) = synthetic_network(40, 4, 8);
        assert_eq!(nodes.iter().filter(|n| n.byzantine).count(), 8);
        let paths = network(
            &dir.join("sub/network"),
            "synthetic network",
            &nodes,
            &edges,
        )?;
        assert_eq!(
            paths,
            vec![dir.join("sub/network.svg"), dir.join("sub/network.png")]
        );
        check(
            &paths,
            &[
                "synthetic network",
                "cluster 0",
                "cluster 3",
                "Byzantine (8)",
                "link",
            ],
        )?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn network_survives_edge_cases() -> TestResult {
        let dir = scratch("net-edge")?;
        check(
            &network(&dir.join("empty"), "empty", &[], &[])?,
            &["empty", "no nodes"],
        )?;
        let one = vec![NetworkNode {
            x: 1.0,
            y: 1.0,
            cluster: 0,
            byzantine: true,
            label: "solo".into(),
        }];
        check(
            &network(&dir.join("one"), "one", &one, &[(0, 0), (0, 5)])?,
            &["solo", "Byzantine (1)"],
        )?;
        let mut same: Vec<NetworkNode> = (0..5)
            .map(|i| NetworkNode {
                x: 0.0,
                y: 0.0,
                cluster: i,
                byzantine: false,
                label: format!("n{i}"),
            })
            .collect();
        same[2].x = f64::NAN;
        same[3].y = f64::INFINITY;
        let edges = [(0, 1), (1, 0), (1, 2), (3, 4), (4, 99), (7, 8)];
        check(
            &network(&dir.join("same"), "same", &same, &edges)?,
            &["cluster 4"],
        )?;
        // Many clusters: the legend is capped and wraps.
        let (many, many_edges) = synthetic_network(60, 20, 3);
        check(
            &network(&dir.join("many"), "many", &many, &many_edges)?,
            &["cluster 11", "20 clusters in all"],
        )?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn error_names_the_file() -> TestResult {
        let dir = scratch("err")?;
        let blocker = dir.join("file");
        std::fs::write(&blocker, b"not a folder")?;
        let err = match loss_bands(&blocker.join("loss"), "t", &[]) {
            Ok(paths) => return Err(format!("expected an error, wrote {paths:?}").into()),
            Err(e) => e,
        };
        let message = err.to_string();
        assert!(message.starts_with("cannot "), "{message}");
        assert!(
            message.contains(&blocker.display().to_string()),
            "{message}"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn suffix_is_appended() {
        assert_eq!(
            with_suffix(Path::new("runs/x/loss.v2"), "png"),
            PathBuf::from("runs/x/loss.v2.png")
        );
        assert_eq!(
            with_suffix(Path::new("loss"), "svg"),
            PathBuf::from("loss.svg")
        );
    }

    #[test]
    fn log_axis_labels() {
        assert_eq!(log_tick_label(0.01, false), "0.01");
        assert_eq!(log_tick_label(0.010000000000000002, false), "0.01");
        assert_eq!(log_tick_label(0.09999999999999999, false), "0.1");
        assert_eq!(log_tick_label(1.0, false), "1");
        assert_eq!(log_tick_label(100.0, false), "100");
        assert_eq!(log_tick_label(1e-6, false), "1e-6");
        assert_eq!(log_tick_label(3.0, false), "");
        assert_eq!(log_tick_label(0.2, false), "");
        assert_eq!(log_tick_label(0.2, true), "0.2");
        assert_eq!(log_tick_label(50.0, true), "50");
        assert_eq!(log_tick_label(3.0, true), "");
        assert_eq!(log_tick_label(0.0, true), "");
        assert_eq!(round_label(50.0), "50");
        assert_eq!(nice_ceil(499.0), 500.0);
        assert_eq!(nice_ceil(99.0), 99.0);
        assert_eq!(nice_ceil(500.0), 500.0);
        assert_eq!(nice_ceil(1234.0), 1300.0);
        assert_eq!(nice_ceil(1.0), 1.0);
        assert_eq!(round_label(0.5), "");
    }
}
