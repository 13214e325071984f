//! One DICOM frame's decoded bytes into values: stored samples unpacked (bits stored, high bit, sign), colour
//! planes interleaved, YCbCr and palette colour turned into RGB, and the modality LUT applied to grey frames.
//!
//! `dicom-pixeldata` decompresses the frames (native, RLE, JPEG, JPEG 2000, deflate); its own value conversion
//! refuses planar configuration 1, palette colour and 32-bit samples, and marks every decompressed 3-sample
//! frame RGB even where the codec left it YCbCr (RLE), so the interpretation of the bytes is done here, after
//! PS3.3 C.7.6.3 (Image Pixel module) and C.7.9 (palette colour lookup tables).
//!
//! A baseline JPEG's colour transform is decided by the DICOM header, not by the JPEG decoder's guess from the
//! component identifiers: see [`decode_jpeg_colour`].

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

/// How the samples of a frame are to be read as colours.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Colour {
    /// One sample; `inverted` for MONOCHROME1 (low values shown white).
    Grey { inverted: bool },
    Rgb,
    /// Full-range YCbCr (BT.601 as PS3.3 C.7.6.3.1.2 gives it), every sample present.
    YbrFull,
    /// YBR_FULL_422 as stored uncompressed: Y Y Cb Cr for each pair of pixels along a row.
    YbrFull422,
    /// One index per pixel into three lookup tables.
    Palette(Box<Palette>),
}

/// PALETTE COLOR lookup tables (red, green, blue) and their descriptor.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Palette {
    /// The stored value mapped to the first entry; values below it map to the first entry, above the end to
    /// the last (PS3.3 C.7.6.3.1.5).
    first: i64,
    /// 8 or 16: the tables' entries bits, which become the volume's bit depth.
    bits: u8,
    tables: [Vec<u16>; 3],
}

/// What a frame's bytes hold, from the header after decompression.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub columns: usize,
    pub rows: usize,
    /// Samples per pixel in the stored frame: 1, or 3 for colour.
    pub samples: usize,
    pub allocated: u16,
    pub stored: u16,
    pub high_bit: u16,
    pub signed: bool,
    /// Colour planes one after the other (planar configuration 1) instead of interleaved per pixel.
    pub planar: bool,
    pub colour: Colour,
}

impl Layout {
    /// Values per pixel in the volume: 3 for every colour layout, palette included.
    pub fn channels(&self) -> usize {
        if matches!(self.colour, Colour::Grey { .. }) { 1 } else { 3 }
    }

    /// Bits of the volume's values: the palette's entries for palette colour, else the stored samples'.
    pub fn bit_depth(&self) -> u8 {
        match &self.colour {
            Colour::Palette(p) => p.bits,
            _ if self.stored <= 8 => 8,
            _ if self.stored <= 16 => 16,
            _ => 32,
        }
    }

    /// Bytes of one decoded frame.
    pub fn frame_bytes(&self) -> usize {
        let per_pixel = if self.colour == Colour::YbrFull422 { 2 } else { self.samples };
        self.columns * self.rows * per_pixel * usize::from(self.allocated / 8)
    }
}

/// The stored-value range `[min, max]` of `stored` bits, signed or not.
pub(super) fn stored_range(stored: u16, signed: bool) -> (i64, i64) {
    if signed { (-(1i64 << (stored - 1)), (1i64 << (stored - 1)) - 1) } else { (0, (1i64 << stored) - 1) }
}

/// Reads the pixel-module attributes of a frame decoded by `dicom-pixeldata`. The colour model is the file's,
/// adjusted for the codec of `syntax`: JPEG and JPEG 2000 decoders hand back RGB; RLE and native data stay as
/// stored.
pub(super) fn layout(obj: &InMemDicomObject, name: &str, syntax: &str) -> Result<Layout, String> {
    let value = |tag: Tag| obj.element_opt(tag).ok().flatten().and_then(|e| e.to_int::<i64>().ok());
    let size = |tag: Tag, what: &str| {
        value(tag).and_then(|v| usize::try_from(v).ok()).ok_or_else(|| format!("{name}: no valid {what} in the header"))
    };
    let (columns, rows, samples) = (size(tags::COLUMNS, "Columns")?, size(tags::ROWS, "Rows")?, size(tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?);
    let allocated = value(tags::BITS_ALLOCATED).unwrap_or(0);
    let stored = value(tags::BITS_STORED).unwrap_or(allocated);
    let high_bit = value(tags::HIGH_BIT).unwrap_or(stored - 1);
    if ![8, 16, 32].contains(&allocated) || stored < 1 || stored > allocated || high_bit < stored - 1 || high_bit >= allocated {
        return Err(format!(
            "{name}: {stored} bits stored in {allocated} allocated with high bit {high_bit} (8-, 16- or 32-bit samples only)"
        ));
    }
    let photometric = obj
        .element_opt(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().trim_end_matches('\0').to_string())
        .unwrap_or_default();
    let colour = colour(obj, name, &photometric, samples, syntax)?;
    let planar = samples > 1 && value(tags::PLANAR_CONFIGURATION) == Some(1) && decoded_as_stored(syntax);
    Ok(Layout {
        columns,
        rows,
        samples,
        allocated: allocated as u16,
        stored: stored as u16,
        high_bit: high_bit as u16,
        signed: value(tags::PIXEL_REPRESENTATION) == Some(1),
        planar,
        colour,
    })
}

/// Whether the transfer syntax leaves the samples as stored (native, deflate, RLE), so the header's colour
/// model and planar configuration describe the decoded bytes. JPEG and JPEG 2000 decoders return RGB,
/// interleaved.
fn decoded_as_stored(syntax: &str) -> bool {
    // Retired from the standard (and deprecated in dicom-rs), but still met in old archives.
    const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
    [uids::IMPLICIT_VR_LITTLE_ENDIAN, uids::EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, uids::RLE_LOSSLESS]
        .contains(&syntax)
}

fn colour(obj: &InMemDicomObject, name: &str, photometric: &str, samples: usize, syntax: &str) -> Result<Colour, String> {
    let colour = match (photometric, samples) {
        ("MONOCHROME1", 1) => Colour::Grey { inverted: true },
        ("MONOCHROME2", 1) => Colour::Grey { inverted: false },
        ("PALETTE COLOR", 1) => Colour::Palette(Box::new(palette(obj, name)?)),
        ("RGB" | "YBR_RCT" | "YBR_ICT" | "YBR_FULL" | "YBR_FULL_422", 3) if !decoded_as_stored(syntax) => Colour::Rgb,
        ("RGB", 3) => Colour::Rgb,
        ("YBR_FULL", 3) => Colour::YbrFull,
        ("YBR_FULL_422", 3) => Colour::YbrFull422,
        _ => {
            return Err(format!(
                "{name}: photometric interpretation {photometric:?} with {samples} sample(s) per pixel is not supported \
                 (grey MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422 and PALETTE COLOR are)"
            ));
        }
    };
    Ok(colour)
}

/// The red, green and blue palette tables with their descriptor (entries, first stored value, bits).
fn palette(obj: &InMemDicomObject, name: &str) -> Result<Palette, String> {
    let channel = |descriptor: Tag, data: Tag, colour: &str| -> Result<(i64, u8, Vec<u16>), String> {
        let missing = || format!("{name}: PALETTE COLOR without a valid {colour} palette lookup table");
        let d: Vec<i64> = obj.element_opt(descriptor).ok().flatten().and_then(|e| e.to_multi_int::<i64>().ok()).ok_or_else(missing)?;
        let [entries, first, bits] = d[..] else { return Err(missing()) };
        // Descriptor values are US or SS by the first value's VR; 0 entries means 65536.
        let entries = if entries == 0 { 65536 } else { entries.rem_euclid(65536) } as usize;
        let bits = u8::try_from(bits).ok().filter(|b| *b == 8 || *b == 16).ok_or_else(missing)?;
        let bytes = obj.element_opt(data).ok().flatten().and_then(|e| e.to_bytes().ok()).ok_or_else(missing)?;
        let table: Vec<u16> = if bits == 8 && bytes.len() == entries {
            bytes.iter().map(|&b| u16::from(b)).collect()
        } else {
            bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
        };
        if table.len() < entries {
            return Err(format!("{name}: the {colour} palette holds {} entries where its descriptor says {entries}", table.len()));
        }
        // 8-bit entries stored in 16-bit words keep their value in the low byte.
        let table = table[..entries].iter().map(|&v| if bits == 8 { v & 0xff } else { v }).collect();
        Ok((first, bits, table))
    };
    let (first, bits, red) = channel(tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA, "red")?;
    let (_, _, green) = channel(tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA, "green")?;
    let (_, _, blue) = channel(tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA, "blue")?;
    Ok(Palette { first, bits, tables: [red, green, blue] })
}

/// The stored samples of a frame as integers: each `allocated`-bit little-endian word shifted down to its
/// `stored` bits ending at `high_bit`, the bits outside (overlays, padding) dropped, sign-extended if signed.
fn samples(bytes: &[u8], layout: &Layout) -> Vec<i64> {
    let shift = u32::from(layout.high_bit + 1 - layout.stored);
    let mask = (1u64 << layout.stored) - 1;
    let sign = 1u64 << (layout.stored - 1);
    let word = |w: u64| {
        let v = (w >> shift) & mask;
        if layout.signed && v & sign != 0 { v as i64 - (mask as i64 + 1) } else { v as i64 }
    };
    match layout.allocated {
        8 => bytes.iter().map(|&b| word(u64::from(b))).collect(),
        16 => bytes.chunks_exact(2).map(|c| word(u64::from(u16::from_le_bytes([c[0], c[1]])))).collect(),
        _ => bytes.chunks_exact(4).map(|c| word(u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))).collect(),
    }
}

/// Full-range YCbCr to RGB (PS3.3 C.7.6.3.1.2), rounded and clamped to the samples' range like the
/// reference readers do.
fn ybr_to_rgb(y: f64, cb: f64, cr: f64, max: f64) -> [f32; 3] {
    let half = (max + 1.0) / 2.0;
    let (cb, cr) = (cb - half, cr - half);
    let rgb = [y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb];
    rgb.map(|v| v.round().clamp(0.0, max) as f32)
}

/// A frame's values, row-major, `channels()` per pixel: grey frames rescaled by `rescale` (slope,
/// intercept), colour frames as RGB samples.
pub(super) fn frame_values(bytes: &[u8], layout: &Layout, rescale: (f64, f64), name: &str) -> Result<Vec<f32>, String> {
    if bytes.len() < layout.frame_bytes() {
        return Err(format!("{name}: {} bytes of pixel data in a frame that needs {}", bytes.len(), layout.frame_bytes()));
    }
    let raw = samples(&bytes[..layout.frame_bytes()], layout);
    let pixels = layout.columns * layout.rows;
    let max = stored_range(layout.stored, false).1 as f64;
    let values = match &layout.colour {
        Colour::Grey { .. } => raw.iter().map(|&v| (v as f64 * rescale.0 + rescale.1) as f32).collect(),
        Colour::Rgb | Colour::YbrFull if layout.planar => {
            let plane = |c: usize| &raw[c * pixels..(c + 1) * pixels];
            let interleaved: Vec<i64> = (0..pixels).flat_map(|i| [plane(0)[i], plane(1)[i], plane(2)[i]]).collect();
            return frame_values_interleaved(&interleaved, layout, max);
        }
        Colour::Rgb | Colour::YbrFull => return frame_values_interleaved(&raw, layout, max),
        Colour::YbrFull422 => {
            if layout.columns % 2 != 0 {
                return Err(format!("{name}: YBR_FULL_422 with an odd number of columns ({})", layout.columns));
            }
            raw.chunks_exact(4).flat_map(|q| [q[0], q[1]].map(|y| ybr_to_rgb(y as f64, q[2] as f64, q[3] as f64, max))).flatten().collect()
        }
        Colour::Palette(p) => {
            let last = p.tables[0].len() - 1;
            let entry = |v: i64| (v - p.first).clamp(0, last as i64) as usize;
            raw.iter().flat_map(|&v| p.tables.iter().map(move |t| f32::from(t[entry(v)]))).collect()
        }
    };
    Ok(values)
}

fn frame_values_interleaved(raw: &[i64], layout: &Layout, max: f64) -> Result<Vec<f32>, String> {
    Ok(match layout.colour {
        Colour::YbrFull => raw.chunks_exact(3).flat_map(|p| ybr_to_rgb(p[0] as f64, p[1] as f64, p[2] as f64, max)).collect(),
        _ => raw.iter().map(|&v| v as f32).collect(),
    })
}

/// The JPEG transfer syntaxes whose decoder applies a colour transform (the lossy DCT processes; lossless
/// JPEG codes RGB samples as they are).
const DCT_JPEG: [&str; 2] = [uids::JPEG_BASELINE8_BIT, uids::JPEG_EXTENDED12_BIT];

/// Decodes the frames of a colour baseline/extended JPEG file with the colour transform the DICOM header
/// asks for, or `None` for any other file (`dicom-pixeldata` decodes those).
///
/// `jpeg-decoder` on its own guesses the transform from the JPEG's component identifiers and markers: a
/// JPEG whose components are numbered 1, 2, 3 is taken for YCbCr even when DICOM says RGB, which gives wrong
/// colours. PS3.5 8.2.1: RGB means the components were coded untransformed (unless the JPEG's own Adobe marker
/// says it applied YCbCr); YBR_FULL / YBR_FULL_422 mean YCbCr.
pub(super) fn decode_jpeg_colour(obj: &InMemDicomObject, syntax: &str, photometric: &str, frames: usize, name: &str) -> Option<Result<Vec<u8>, String>> {
    if !DCT_JPEG.contains(&syntax) || !["RGB", "YBR_FULL", "YBR_FULL_422"].contains(&photometric) {
        return None;
    }
    let fragments = obj.element_opt(tags::PIXEL_DATA).ok().flatten()?.value().fragments()?;
    let stream: Vec<u8> = fragments.iter().flatten().copied().collect();
    Some(decode_jpeg_stream(&stream, photometric == "RGB", frames).map_err(|e| format!("{name}: cannot decode the JPEG pixel data: {e}")))
}

/// Decodes `frames` JPEG images one after the other in `stream` (fragments concatenated; padding between
/// images skipped up to the next start-of-image marker).
fn decode_jpeg_stream(stream: &[u8], coded_rgb: bool, frames: usize) -> Result<Vec<u8>, String> {
    use jpeg_decoder::{ColorTransform, Decoder};
    let mut out = Vec::new();
    let mut at = 0;
    for frame in 0..frames {
        at += stream.get(at..).and_then(|rest| rest.windows(2).position(|w| w == [0xff, 0xd8])).ok_or(format!("frame {frame} is missing"))?;
        let mut cursor = std::io::Cursor::new(&stream[at..]);
        let mut decoder = Decoder::new(&mut cursor);
        let adobe_ycbcr = jpeg_has_adobe_ycbcr(&stream[at..]);
        decoder.set_color_transform(if coded_rgb && !adobe_ycbcr { ColorTransform::RGB } else { ColorTransform::YCbCr });
        out.extend(decoder.decode().map_err(|e| format!("frame {frame}: {e}"))?);
        at += (cursor.position() as usize).max(2);
    }
    Ok(out)
}

/// Whether the JPEG's Adobe APP14 marker says its components were transformed to YCbCr (transform flag 1).
fn jpeg_has_adobe_ycbcr(jpeg: &[u8]) -> bool {
    let mut at = 2;
    while let Some(&[0xff, marker, hi, lo]) = jpeg.get(at..at + 4).map(|s| <&[u8; 4]>::try_from(s).unwrap()) {
        if marker == 0xda {
            return false; // start of scan: no more headers
        }
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let segment = jpeg.get(at + 4..at + 2 + len).unwrap_or_default();
        if marker == 0xee && segment.starts_with(b"Adobe") && segment.len() >= 12 {
            return segment[11] == 1;
        }
        at += 2 + len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(allocated: u16, stored: u16, high_bit: u16, signed: bool) -> Layout {
        Layout { columns: 2, rows: 1, samples: 1, allocated, stored, high_bit, signed, planar: false, colour: Colour::Grey { inverted: false } }
    }

    #[test]
    fn stored_bits_are_unpacked_masked_and_sign_extended() {
        // 12 bits stored at bits 0..12 with overlay bits above, signed: 0xF800 | 0x0FFF -> -1, 0x17FF -> 2047.
        let l = layout(16, 12, 11, true);
        let bytes = [0xffu16 | 0xff00, 0x17ff].iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<_>>();
        assert_eq!(samples(&bytes, &l), [-1, 2047]);
        // 10 bits stored ending at high bit 13 (shifted by 4), unsigned.
        let l = layout(16, 10, 13, false);
        let bytes = [0x3ff0u16, 0x0010].iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<_>>();
        assert_eq!(samples(&bytes, &l), [1023, 1]);
        // 32-bit signed, rescaled.
        let l = layout(32, 32, 31, true);
        let bytes = [-5i32, 100_000].iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<_>>();
        assert_eq!(frame_values(&bytes, &l, (0.5, 1.0), "x").unwrap(), [-1.5, 50_001.0]);
        assert!(frame_values(&bytes[..7], &l, (1.0, 0.0), "x").unwrap_err().contains("7 bytes"));
    }

    #[test]
    fn ybr_and_planar_colour_become_interleaved_rgb() {
        assert_eq!(ybr_to_rgb(128.0, 128.0, 128.0, 255.0), [128.0; 3]);
        assert_eq!(ybr_to_rgb(76.0, 85.0, 255.0, 255.0), [254.0, 0.0, 0.0]); // BT.601 red
        let planar = Layout { samples: 3, planar: true, colour: Colour::Rgb, ..layout(8, 8, 7, false) };
        assert_eq!(frame_values(&[1, 2, 3, 4, 5, 6], &planar, (1.0, 0.0), "x").unwrap(), [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        let pairs = Layout { samples: 3, colour: Colour::YbrFull422, ..layout(8, 8, 7, false) };
        assert_eq!(frame_values(&[10, 200, 128, 128], &pairs, (1.0, 0.0), "x").unwrap(), [10.0, 10.0, 10.0, 200.0, 200.0, 200.0]);
    }

    #[test]
    fn palette_indices_clamp_to_the_table() {
        let palette = Palette { first: 10, bits: 16, tables: [vec![0, 1000], vec![5, 6], vec![65535, 7]] };
        let l = Layout { colour: Colour::Palette(Box::new(palette)), ..layout(8, 8, 7, false) };
        assert_eq!(frame_values(&[0, 200], &l, (1.0, 0.0), "x").unwrap(), [0.0, 5.0, 65535.0, 1000.0, 6.0, 7.0]);
        assert_eq!((l.channels(), l.bit_depth()), (3, 16));
    }
}
