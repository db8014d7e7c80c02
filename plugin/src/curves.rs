//! `curves -o FILE.png`: runs' epoch metric drawn as lines, one per run (rank 0), with plotters'
//! bitmap backend and a font compiled in (DejaVu Sans, `assets/`), so it needs no fontconfig,
//! freetype or display. Pure: points in, PNG bytes out.

use std::sync::Once;

use anyhow::{anyhow, bail};
use miniautoml_console::views::Point;
use plotters::prelude::*;

/// DejaVu Sans (its licence beside it in `assets/`).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() -> anyhow::Result<()> {
    static REGISTER: Once = Once::new();
    let mut result = Ok(());
    REGISTER.call_once(|| {
        result = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the embedded font does not load"));
    });
    result
}

/// The metric to draw: the one asked for (which some run must have), else accuracy, else loss,
/// else the first there is.
pub fn metric(asked: Option<&str>, series: &[(String, Vec<Point>)]) -> anyhow::Result<String> {
    let mut names: Vec<String> = series
        .iter()
        .flat_map(|(_, points)| points.iter().flat_map(|p| p.metrics.keys().cloned()))
        .collect();
    names.sort();
    names.dedup();
    if let Some(asked) = asked {
        if names.iter().any(|n| n == asked) {
            return Ok(asked.to_string());
        }
        bail!("no run has the metric {asked:?}; they have: {}", names.join(", "));
    }
    miniautoml_console::views::chosen_metric("", &names).ok_or_else(|| anyhow!("the runs have no epochs yet"))
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(59, 130, 246),
    RGBColor(239, 68, 68),
    RGBColor(34, 197, 94),
    RGBColor(245, 158, 11),
    RGBColor(168, 85, 247),
    RGBColor(20, 184, 166),
];

/// A PNG of `metric` against the epoch for each `(label, points)`, `width`×`height` pixels.
pub fn render(
    series: &[(String, Vec<Point>)],
    metric: &str,
    width: u32,
    height: u32,
) -> anyhow::Result<Vec<u8>> {
    if !(200..=8000).contains(&width) || !(150..=8000).contains(&height) {
        bail!("--width 200–8000 and --height 150–8000 pixels, not {width}×{height}");
    }
    register_font()?;
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, points)| {
            let mut xy: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.rank == 0)
                .filter_map(|p| Some((p.epoch as f64, *p.metrics.get(metric)?)))
                .filter(|(_, y)| y.is_finite())
                .collect();
            xy.sort_by(|a, b| a.0.total_cmp(&b.0));
            (label.clone(), xy)
        })
        .collect();
    let all = lines.iter().flat_map(|(_, xy)| xy.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in all {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        bail!("no epoch of these runs has {metric:?}");
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);

    let mut buffer = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("drawing: {e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(metric, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| anyhow!("drawing: {e}"))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc(metric)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("drawing: {e}"))?;
        for (i, (label, xy)) in lines.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(xy.iter().copied(), colour.stroke_width(2)))
                .map_err(|e| anyhow!("drawing: {e}"))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("drawing: {e}"))?;
        root.present().map_err(|e| anyhow!("drawing: {e}"))?;
    }
    encode_png(&buffer, width, height)
}

/// RGB pixels as a PNG.
fn encode_png(rgb: &[u8], width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| anyhow!("encoding the PNG: {e}"))?;
    Ok(png)
}

/// `(width, height)` of a PNG, from its header.
#[cfg(test)]
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(n: u64) -> Vec<Point> {
        (1..=n)
            .map(|e| Point {
                id: format!("0-{e}"),
                rank: 0,
                epoch: e,
                metrics: [("accuracy".to_string(), e as f64 / n as f64)].into(),
            })
            .collect()
    }

    #[test]
    fn a_png_of_the_size_asked_for() {
        let series = vec![("a".to_string(), points(30)), ("b".to_string(), points(10))];
        let png = render(&series, "accuracy", 640, 360).unwrap();
        assert_eq!(png_size(&png), Some((640, 360)));
        assert!(
            render(&series, "loss", 640, 360).is_err(),
            "a metric no epoch has"
        );
        assert!(render(&series, "accuracy", 10, 10).is_err());
    }

    #[test]
    fn the_metric_is_the_one_asked_for_when_a_run_has_it() {
        let series = vec![("a".to_string(), points(3))];
        assert_eq!(metric(None, &series).unwrap(), "accuracy");
        assert!(
            metric(Some("loss"), &series)
                .unwrap_err()
                .to_string()
                .contains("accuracy")
        );
    }
}
