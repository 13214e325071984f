//! Mapping the raw values of a volume to the 8-bit RGB frames the model sees.
//!
//! Every mapping is a linear ramp `low -> 0, high -> 255` with clipping; the variants only differ in how
//! `low` and `high` are chosen. Grey values are replicated to R, G and B; RGB sources are mapped per sample.
//! Non-finite values (NaN in float NIfTI) become 0 and are ignored when computing statistics.

use super::{Modality, Volume};
use image::RgbImage;
use serde::Serialize;

/// How raw values become 0..255.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Intensity {
    /// Clip to [low, high] (e.g. HU) then scale to 0..255.
    Window { low: f32, high: f32 },
    /// Per-volume percentiles (0..100) as the window, e.g. 0.5..99.5 for MR (FS-MedSAM2 cuts the top 0.5%).
    Percentile { low: f32, high: f32 },
    /// The volume's minimum and maximum as the window.
    MinMax,
    /// Values as they are (8-bit sources), clipped to 0..255.
    Identity,
}

/// The mapping actually used, with the numbers it resolved to, for the output metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntensityInfo {
    /// "window", "percentile", "minmax" or "identity".
    pub kind: String,
    /// The raw value mapped to 0.
    pub low: f32,
    /// The raw value mapped to 255.
    pub high: f32,
    /// For "percentile": the percentiles asked for, whose values are `low` and `high`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentiles: Option<[f32; 2]>,
}

/// The named presets, as `preset` accepts them, for help texts and error messages.
pub const PRESETS: [&str; 8] = ["ct-abdomen", "ct-soft", "ct-lung", "ct-bone", "ct-brain", "mr", "minmax", "identity"];

/// Parses a preset name, `window:LOW,HIGH` or `percentile:LOW,HIGH`. CT windows are given as [low, high] =
/// [L - W/2, L + W/2]; "ct-abdomen" is the FS-MedSAM2 default.
pub fn preset(name: &str) -> Result<Intensity, String> {
    let window = |low, high| Intensity::Window { low, high };
    let parsed = match name.trim().to_ascii_lowercase().as_str() {
        "ct-abdomen" => window(-125.0, 275.0),
        "ct-soft" => window(-160.0, 240.0),
        "ct-lung" => window(-1350.0, 150.0),
        "ct-bone" => window(-500.0, 1300.0),
        "ct-brain" => window(0.0, 80.0),
        "mr" => Intensity::Percentile { low: 0.5, high: 99.5 },
        "minmax" => Intensity::MinMax,
        "identity" => Intensity::Identity,
        other => parse_range(other)?,
    };
    validate(&parsed)?;
    Ok(parsed)
}

/// `window:LOW,HIGH` or `percentile:LOW,HIGH`; anything else is an unknown preset.
fn parse_range(text: &str) -> Result<Intensity, String> {
    let unknown = || {
        format!("unknown intensity '{text}': use one of {}, window:LOW,HIGH or percentile:LOW,HIGH", PRESETS.join(", "))
    };
    let (kind, range) = text.split_once(':').ok_or_else(unknown)?;
    let (low, high) = range.split_once(',').ok_or_else(|| format!("'{text}': expected two numbers LOW,HIGH"))?;
    let number = |s: &str| s.trim().parse::<f32>().map_err(|_| format!("'{text}': '{}' is not a number", s.trim()));
    let (low, high) = (number(low)?, number(high)?);
    match kind {
        "window" => Ok(Intensity::Window { low, high }),
        "percentile" => Ok(Intensity::Percentile { low, high }),
        _ => Err(unknown()),
    }
}

/// Refuses empty or inverted ranges, which would divide by zero or flip the image.
fn validate(intensity: &Intensity) -> Result<(), String> {
    match *intensity {
        Intensity::Window { low, high } if !(low.is_finite() && high.is_finite() && low < high) => {
            Err(format!("window [{low}, {high}]: LOW must be below HIGH"))
        }
        Intensity::Percentile { low, high } if !(0.0 <= low && low < high && high <= 100.0) => {
            Err(format!("percentiles [{low}, {high}]: need 0 <= LOW < HIGH <= 100"))
        }
        _ => Ok(()),
    }
}

/// The model input's mapping, chosen in this one place for every front-end (`memseg segment`, `memseg eval`,
/// the page): `name` is a preset, `window:LOW,HIGH` or `percentile:LOW,HIGH`; `None` or `"auto"` is the
/// volume's usual mapping ([`default_for`]).
pub fn choose(volume: &Volume, name: Option<&str>) -> Result<Intensity, String> {
    match name {
        None | Some("auto") => Ok(default_for(volume)),
        Some(name) => preset(name),
    }
}

/// The usual mapping for a volume: CT -> "ct-abdomen", MR -> "mr", 8-bit sources -> identity, anything else
/// (16-bit images, float NIfTI of unknown modality) -> min-max.
pub fn default_for(volume: &Volume) -> Intensity {
    match volume.modality {
        Modality::Ct => Intensity::Window { low: -125.0, high: 275.0 },
        Modality::Mr => Intensity::Percentile { low: 0.5, high: 99.5 },
        Modality::Other if volume.bit_depth <= 8 => Intensity::Identity,
        Modality::Other => Intensity::MinMax,
    }
}

/// The mapping a support slice from another volume gets, as `memseg segment --support` gives it: an 8-bit
/// image is used as it is (the picture the user saw and drew on, already windowed); a DICOM / NIfTI / 16-bit
/// slice gets the query's mapping, so that support and query look alike to the model.
pub fn for_support(support: &Volume, query: &Intensity) -> Intensity {
    let as_is = support.kind == super::SourceKind::Raster && support.bit_depth == 8;
    if as_is { Intensity::Identity } else { *query }
}

/// At most this many values feed the percentiles: an evenly strided sample of a large volume gives the same
/// percentiles to display precision, without sorting a copy of the whole volume.
const MAX_SAMPLE: usize = 1 << 22;

/// The finite values of `data` (all of them, or an evenly strided sample when there are many), sorted.
fn sorted_sample(data: &[f32]) -> Vec<f32> {
    // An odd stride, so that it does not keep hitting the same columns of even-width slices.
    let stride = (data.len() / MAX_SAMPLE) | 1;
    let mut sample: Vec<f32> = data.iter().step_by(stride).copied().filter(|v| v.is_finite()).collect();
    sample.sort_unstable_by(f32::total_cmp);
    sample
}

/// The `p`-th percentile (0..100) of sorted values, interpolating linearly between ranks (NumPy's default).
fn percentile(sorted: &[f32], p: f32) -> f32 {
    let Some(last) = sorted.len().checked_sub(1) else { return 0.0 };
    let rank = (p as f64 / 100.0 * last as f64).clamp(0.0, last as f64);
    let (below, frac) = (rank.floor() as usize, rank.fract() as f32);
    let (a, b) = (sorted[below], sorted[(below + 1).min(last)]);
    a + (b - a) * frac
}

/// The smallest and largest finite values (0, 0 when there are none).
fn min_max(data: &[f32]) -> (f32, f32) {
    let finite = data.iter().copied().filter(|v| v.is_finite());
    let (low, high) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if low <= high { (low, high) } else { (0.0, 0.0) }
}

/// Resolves a mapping on a volume to the numbers it uses.
pub fn resolve(volume: &Volume, intensity: &Intensity) -> Result<IntensityInfo, String> {
    validate(intensity)?;
    let info = |kind: &str, low, high, percentiles| IntensityInfo { kind: kind.into(), low, high, percentiles };
    Ok(match *intensity {
        Intensity::Window { low, high } => info("window", low, high, None),
        Intensity::Percentile { low, high } => {
            let sorted = sorted_sample(&volume.data);
            info("percentile", percentile(&sorted, low), percentile(&sorted, high), Some([low, high]))
        }
        Intensity::MinMax => {
            let (low, high) = min_max(&volume.data);
            info("minmax", low, high, None)
        }
        Intensity::Identity => info("identity", 0.0, 255.0, None),
    })
}

/// One 8-bit RGB image per slice, with the mapping resolved for the metadata.
pub fn to_rgb8_with_info(volume: &Volume, intensity: &Intensity) -> Result<(Vec<RgbImage>, IntensityInfo), String> {
    let info = resolve(volume, intensity)?;
    let images = (0..volume.depth).map(|z| slice_to_rgb8(volume, z, &info)).collect::<Result<_, _>>()?;
    Ok((images, info))
}

/// Slice `z` as 8-bit RGB under a resolved mapping (what [`to_rgb8_with_info`] gives for that slice).
pub fn slice_to_rgb8(volume: &Volume, z: usize, info: &IntensityInfo) -> Result<RgbImage, String> {
    // A constant volume (high == low) maps to black rather than dividing by zero.
    let scale = if info.high > info.low { 255.0 / (info.high - info.low) } else { 0.0 };
    let to_u8 = |v: f32| ((v - info.low) * scale).round().clamp(0.0, 255.0) as u8; // NaN -> 0
    let pixels = volume.width * volume.height;
    if z >= volume.depth {
        return Err(format!("{}: slice {z} is out of range ({} slices)", volume.source, volume.depth));
    }
    let slice = volume.slice(z);
    if slice.len() != pixels * volume.channels || !(volume.channels == 1 || volume.channels == 3) {
        return Err(format!("{}: slice {z} does not hold {pixels} pixels of 1 or 3 channels", volume.source));
    }
    let rgb: Vec<u8> = match volume.channels {
        1 => slice.iter().flat_map(|&v| [to_u8(v); 3]).collect(),
        _ => slice.iter().map(|&v| to_u8(v)).collect(),
    };
    RgbImage::from_raw(volume.width as u32, volume.height as u32, rgb)
        .ok_or_else(|| format!("{}: slice {z} does not fit a {}×{} image", volume.source, volume.width, volume.height))
}

/// One 8-bit RGB image per slice.
pub fn to_rgb8(volume: &Volume, intensity: &Intensity) -> Result<Vec<RgbImage>, String> {
    Ok(to_rgb8_with_info(volume, intensity)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::SourceKind;

    fn grey(values: Vec<f32>, modality: Modality, bit_depth: u8) -> Volume {
        let mut v = Volume::new("t", SourceKind::Dicom, [values.len(), 1, 1, 1], values).unwrap();
        (v.modality, v.bit_depth) = (modality, bit_depth);
        v
    }

    fn reds(images: &[RgbImage]) -> Vec<u8> {
        images[0].pixels().map(|p| p.0[0]).collect()
    }

    #[test]
    fn window_maps_known_hu() {
        let v = grey(vec![-1000.0, -125.0, 75.0, 275.0, 3000.0, f32::NAN], Modality::Ct, 16);
        let (images, info) = to_rgb8_with_info(&v, &preset("ct-abdomen").unwrap()).unwrap();
        assert_eq!(reds(&images), [0, 0, 128, 255, 255, 0]);
        assert!(images[0].pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        assert_eq!((info.kind.as_str(), info.low, info.high), ("window", -125.0, 275.0));
        let brain = to_rgb8(&grey(vec![0.0, 40.0, 80.0], Modality::Ct, 16), &preset("ct-brain").unwrap()).unwrap();
        assert_eq!(reds(&brain), [0, 128, 255]);
    }

    #[test]
    fn percentile_on_a_ramp() {
        let v = grey((0..=1000).map(|i| i as f32).collect(), Modality::Mr, 16);
        let info = resolve(&v, &Intensity::Percentile { low: 0.0, high: 99.5 }).unwrap();
        assert_eq!((info.low, info.high, info.percentiles), (0.0, 995.0, Some([0.0, 99.5])));
        let mr = resolve(&v, &preset("mr").unwrap()).unwrap();
        assert_eq!((mr.low, mr.high), (5.0, 995.0));
        // Between ranks: NumPy's linear interpolation (percentile([0, 10], 25) == 2.5).
        let two = grey(vec![10.0, 0.0, f32::NAN], Modality::Mr, 16);
        assert_eq!(resolve(&two, &Intensity::Percentile { low: 25.0, high: 100.0 }).unwrap().low, 2.5);
        let images = to_rgb8(&v, &Intensity::Percentile { low: 0.0, high: 99.5 }).unwrap();
        assert_eq!(images[0].get_pixel(1000, 0).0, [255; 3]);
        assert_eq!(images[0].get_pixel(0, 0).0, [0; 3]);
    }

    #[test]
    fn minmax_identity_and_rgb() {
        let v = grey(vec![100.0, 300.0, 200.0, f32::INFINITY], Modality::Other, 16);
        assert_eq!(reds(&to_rgb8(&v, &Intensity::MinMax).unwrap()), [0, 255, 128, 255]);
        let flat = grey(vec![7.0, 7.0], Modality::Other, 16);
        assert_eq!(reds(&to_rgb8(&flat, &Intensity::MinMax).unwrap()), [0, 0]);
        let rgb = Volume::new("rgb", SourceKind::Raster, [2, 1, 1, 3], vec![1.0, 2.0, 3.0, 250.0, 260.0, -4.0]).unwrap();
        let images = to_rgb8(&rgb, &Intensity::Identity).unwrap();
        assert_eq!(images[0].as_raw(), &[1, 2, 3, 250, 255, 0]);
    }

    #[test]
    fn presets_parse_and_errors_list_them() {
        assert_eq!(preset("ct-lung").unwrap(), Intensity::Window { low: -1350.0, high: 150.0 });
        assert_eq!(preset("ct-bone").unwrap(), Intensity::Window { low: -500.0, high: 1300.0 });
        assert_eq!(preset("ct-soft").unwrap(), Intensity::Window { low: -160.0, high: 240.0 });
        assert_eq!(preset(" Window:-100, 200 ").unwrap(), Intensity::Window { low: -100.0, high: 200.0 });
        assert_eq!(preset("percentile:1,99").unwrap(), Intensity::Percentile { low: 1.0, high: 99.0 });
        let err = preset("bone").unwrap_err();
        assert!(PRESETS.iter().all(|p| err.contains(p)), "{err}");
        assert!(preset("window:5,5").unwrap_err().contains("below"));
        assert!(preset("window:a,5").unwrap_err().contains("not a number"));
        assert!(preset("window:5").is_err());
        assert!(preset("percentile:-1,50").is_err());
        assert!(preset("percentile:10,101").is_err());
        assert!(preset("level:1,2").unwrap_err().contains("unknown"));
    }

    #[test]
    fn defaults_follow_modality_and_depth() {
        assert_eq!(default_for(&grey(vec![0.0], Modality::Ct, 16)), preset("ct-abdomen").unwrap());
        assert_eq!(default_for(&grey(vec![0.0], Modality::Mr, 16)), preset("mr").unwrap());
        assert_eq!(default_for(&grey(vec![0.0], Modality::Other, 8)), Intensity::Identity);
        assert_eq!(default_for(&grey(vec![0.0], Modality::Other, 16)), Intensity::MinMax);
        let info = serde_json::to_value(resolve(&grey(vec![0.0], Modality::Ct, 16), &Intensity::MinMax).unwrap()).unwrap();
        assert_eq!(info, serde_json::json!({"kind": "minmax", "low": 0.0, "high": 0.0}));
    }
}
