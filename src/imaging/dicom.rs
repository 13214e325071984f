//! A DICOM series into a [`Volume`] placed in patient space: one file per slice, or multi-frame files (enhanced
//! CT / MR with per-frame functional groups, legacy multi-frame ultrasound, secondary capture, cine), each frame
//! a slice.
//!
//! Slices are ordered by their position along the slice normal (ImagePositionPatient projected on the cross
//! product of the ImageOrientationPatient directions; for enhanced files, each frame's Plane Position and Plane
//! Orientation), falling back to InstanceNumber (frame order within a multi-frame file) when positions are
//! missing. Grey values go through the modality LUT (RescaleSlope / RescaleIntercept, per frame for enhanced
//! files), which gives HU for CT. A set of files that is not one evenly spaced series is refused with the files
//! at fault named, since a silently mis-stacked volume would give wrong 3-D segmentations.
//!
//! Pixel data is decompressed by `dicom-pixeldata` with pure-Rust codecs only, so that it compiles to
//! WebAssembly: native, deflate, RLE, JPEG (baseline, extended, lossless; colour JPEGs through
//! [`dicom_pixels::decode_jpeg_colour`]) and JPEG 2000 (`openjp2`). [`dicom_pixels`] turns the bytes into values.
//! JPEG-LS, JPEG XL and video syntaxes are refused by name, with the command that converts them.

use super::{InputFile, Modality, SourceKind, Volume, checked_len, dicom_pixels, file_stem};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;

/// Two slice positions closer than this (mm) are the same position.
const SAME_POSITION_MM: f64 = 1.0e-3;
/// Orientation cosines and pixel spacings differing by more than this are different series.
const GEOMETRY_TOLERANCE: f64 = 1.0e-3;

/// Where the Part-10 "DICM" marker puts the file meta group: after the 128-byte preamble, or at the start
/// of files written without one.
fn meta_offset(bytes: &[u8]) -> Option<usize> {
    if bytes.get(128..132) == Some(b"DICM".as_slice()) {
        Some(128)
    } else if bytes.starts_with(b"DICM") {
        Some(0)
    } else {
        None
    }
}

/// Whether `bytes` carry the DICOM Part-10 marker.
pub fn has_dicom_marker(bytes: &[u8]) -> bool {
    meta_offset(bytes).is_some()
}

/// An error with its causes: `dicom-rs` keeps the useful part ("unexpected end of file") in the sources.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// (columns, rows, channels, bit depth) of a slice.
type Shape = (usize, usize, usize, u8);

/// What one frame contributes (a file holds one, or many in a multi-frame file): its header fields that
/// matter for stacking, and its values.
#[derive(Debug)]
struct Slice {
    /// The file, and the frame in a multi-frame file, for messages.
    name: String,
    /// The slice's name in the volume: the file's stem, with the frame number for multi-frame files.
    label: String,
    series: String,
    modality: Modality,
    /// Must match across the series.
    shape: Shape,
    /// Row direction then column direction (LPS cosines).
    orientation: Option<[f64; 6]>,
    /// Centre of the first pixel (LPS mm).
    position: Option<[f64; 3]>,
    instance: Option<i64>,
    /// (between rows, between columns) in mm, as PixelSpacing orders them.
    pixel_spacing: Option<[f64; 2]>,
    /// SpacingBetweenSlices, else SliceThickness: the slice step when positions cannot give it.
    thickness: Option<f64>,
    pixels: Vec<f32>,
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let element = obj.element_opt(tag).ok().flatten()?;
    let value = element.to_str().ok()?.trim().trim_end_matches('\0').to_string();
    (!value.is_empty()).then_some(value)
}

/// The first `N` numbers of a multi-valued numeric element, when all are finite.
fn numbers<const N: usize>(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<[f64; N]> {
    let values = obj.element_opt(tag).ok().flatten()?.to_multi_float64().ok()?;
    let array: [f64; N] = values.get(..N)?.try_into().ok()?;
    array.iter().all(|v| v.is_finite()).then_some(array)
}

fn integer(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.element_opt(tag).ok().flatten()?.to_int::<i64>().ok()
}

fn modality_of(obj: &InMemDicomObject) -> Modality {
    match text(obj, tags::MODALITY).as_deref() {
        Some("CT") => Modality::Ct,
        Some("MR") => Modality::Mr,
        _ => Modality::Other,
    }
}

/// Transfer syntaxes no decoder built into memseg reads, with what to do about them.
fn refused_syntax(syntax: &str) -> Option<&'static str> {
    match syntax {
        // JPEG-LS lossless and near-lossless (PS3.5 A.4.3): the only decoder for Rust is CharLS, C++ that does
        // not build for the browser.
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => {
            Some("JPEG-LS, which memseg cannot decode (its only codec, CharLS, does not build for the browser); convert the files to an uncompressed or JPEG 2000 syntax first, e.g. `gdcmconv --raw in.dcm out.dcm` or `dcmdjpls in.dcm out.dcm`")
        }
        // JPEG XL (PS3.5 A.4.11).
        "1.2.840.10008.1.2.4.110" | "1.2.840.10008.1.2.4.111" | "1.2.840.10008.1.2.4.112" => {
            Some("JPEG XL, which memseg cannot decode; convert the files to an uncompressed or JPEG 2000 syntax first, e.g. `gdcmconv --raw in.dcm out.dcm`")
        }
        // MPEG-2, MPEG-4 AVC/H.264 and HEVC/H.265 video (PS3.5 A.4.5 to A.4.7, A.4.10).
        s if s.starts_with("1.2.840.10008.1.2.4.10") => {
            Some("video (MPEG-2, H.264 or HEVC), which memseg does not decode; convert the frames to an uncompressed syntax first, e.g. with `ffmpeg` to images, or `gdcmconv --raw`")
        }
        _ => None,
    }
}

/// A sequence of the functional groups (PS3.3 C.7.6.16) that applies to `frame`: the frame's own item in the
/// per-frame groups, else the shared one.
fn frame_group(obj: &InMemDicomObject, frame: usize, sequence: dicom_core::Tag) -> Option<&InMemDicomObject> {
    let item = |groups, index: usize| obj.element_opt(groups).ok().flatten()?.items()?.get(index)?.element_opt(sequence).ok().flatten()?.items()?.first();
    item(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frame).or_else(|| item(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, 0))
}

/// A frame's attribute from its functional group `sequence` (enhanced multi-frame files), else from the top of
/// the dataset (single-frame and legacy multi-frame files).
fn frame_attribute<T>(obj: &InMemDicomObject, frame: usize, sequence: dicom_core::Tag, read: impl Fn(&InMemDicomObject) -> Option<T>) -> Option<T> {
    frame_group(obj, frame, sequence).and_then(&read).or_else(|| read(obj))
}

/// Parses one file: its header, then every frame's values and geometry. `others` is how many slices the rest
/// of the series holds (at least), for the size check.
fn parse_file(file: &InputFile, others: usize) -> Result<Vec<Slice>, String> {
    let name = &file.name;
    let start = meta_offset(&file.bytes).ok_or_else(|| format!("{name}: not a DICOM file (no DICM marker)"))?;
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(file.bytes.get(start..).unwrap_or_default())
        .map_err(|e| format!("{name}: unreadable or truncated DICOM: {}", describe(&e)))?;
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(format!("{name}: no pixel data (not an image)"));
    }
    let syntax = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
    if let Some(why) = refused_syntax(&syntax) {
        return Err(format!("{name}: compressed as {why}"));
    }
    let frames = integer(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    let frames = usize::try_from(frames).ok().filter(|&n| n >= 1).ok_or_else(|| format!("{name}: NumberOfFrames is {frames}"))?;
    let layout = dicom_pixels::layout(&obj, name, &syntax)?;
    // The whole volume's size is checked before anything is decoded.
    checked_len(name, layout.columns, layout.rows, frames + others, layout.channels())?;
    let bytes = decode_frames(&obj, &syntax, frames, name)?;
    let frame_len = layout.frame_bytes();
    if bytes.len() < frame_len * frames {
        return Err(format!("{name}: {} bytes of pixel data where {frames} frame(s) of {frame_len} bytes are declared", bytes.len()));
    }
    (0..frames).map(|f| frame_slice(&obj, file, f, frames, &layout, &bytes[f * frame_len..(f + 1) * frame_len])).collect()
}

/// Every frame's decompressed bytes, one after the other.
fn decode_frames(obj: &DefaultDicomObject, syntax: &str, frames: usize, name: &str) -> Result<Vec<u8>, String> {
    let photometric = text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if let Some(decoded) = dicom_pixels::decode_jpeg_colour(obj, syntax, &photometric, frames, name) {
        return decoded;
    }
    let decoded = obj.decode_pixel_data().map_err(|e| format!("{name}: cannot decode the pixel data: {}", describe(&e)))?;
    Ok(decoded.into_data())
}

/// One frame of a file as a slice: its values through [`dicom_pixels`], its geometry from the frame's
/// functional groups or the file's header.
fn frame_slice(obj: &InMemDicomObject, file: &InputFile, f: usize, frames: usize, layout: &dicom_pixels::Layout, bytes: &[u8]) -> Result<Slice, String> {
    let multi = frames > 1;
    let name = if multi { format!("{} (frame {} of {frames})", file.name, f + 1) } else { file.name.clone() };
    let rescale = frame_attribute(obj, f, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, |o| Some((numbers::<1>(o, tags::RESCALE_SLOPE)?[0], numbers::<1>(o, tags::RESCALE_INTERCEPT)?[0])))
        .unwrap_or((1.0, 0.0));
    let modality = modality_of(obj);
    let mut pixels = dicom_pixels::frame_values(bytes, layout, rescale, &name)?;
    invert_monochrome1(&mut pixels, layout, rescale, modality);
    // A legacy multi-frame file (cine, ultrasound) has one position for all its frames: only the first keeps
    // it, and the frames stay in their stored order.
    let position = frame_group(obj, f, tags::PLANE_POSITION_SEQUENCE)
        .and_then(|g| numbers(g, tags::IMAGE_POSITION_PATIENT))
        .or_else(|| if multi && f > 0 { None } else { numbers(obj, tags::IMAGE_POSITION_PATIENT) });
    let measures = tags::PIXEL_MEASURES_SEQUENCE;
    let step = frame_attribute(obj, f, measures, |o| numbers::<1>(o, tags::SPACING_BETWEEN_SLICES).or_else(|| numbers::<1>(o, tags::SLICE_THICKNESS)));
    let stem = file_stem(&file.name);
    Ok(Slice {
        label: if multi { format!("{stem}_frame{:04}", f + 1) } else { stem },
        series: text(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        modality,
        shape: (layout.columns, layout.rows, layout.channels(), layout.bit_depth()),
        orientation: frame_attribute(obj, f, tags::PLANE_ORIENTATION_SEQUENCE, |o| numbers(o, tags::IMAGE_ORIENTATION_PATIENT)),
        position,
        instance: if multi { Some(f as i64) } else { integer(obj, tags::INSTANCE_NUMBER) },
        pixel_spacing: frame_attribute(obj, f, measures, |o| numbers(o, tags::PIXEL_SPACING)).filter(|s| s.iter().all(|&v| v > 0.0)),
        thickness: step.map(|[t]| t.abs()).filter(|&t| t > 0.0),
        pixels,
        name,
    })
}

/// MONOCHROME1 shows low values white. Inverting within the stored range makes bright mean high like
/// everywhere else, except for CT, whose HU are physical values that the windows are defined on.
fn invert_monochrome1(values: &mut [f32], layout: &dicom_pixels::Layout, (slope, intercept): (f64, f64), modality: Modality) {
    if layout.colour != (dicom_pixels::Colour::Grey { inverted: true }) || modality == Modality::Ct {
        return;
    }
    let (min, max) = dicom_pixels::stored_range(layout.stored, layout.signed);
    let sum = ((min + max) as f64 * slope + 2.0 * intercept) as f32;
    values.iter_mut().for_each(|v| *v = sum - *v);
}

/// Refuses files that do not belong with the first one: another series, size, or plane.
fn check_one_series(slices: &[Slice]) -> Result<(), String> {
    let Some(first) = slices.first() else { return Ok(()) };
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= GEOMETRY_TOLERANCE);
    for s in slices {
        let differs = if s.series != first.series {
            Some(format!("series {:?} where {} is in {:?}", s.series, first.name, first.series))
        } else if s.shape != first.shape {
            let (c, r, n, b) = s.shape;
            Some(format!("{c}×{r} pixels, {n} sample(s) of {b} bits, unlike {} ({:?})", first.name, first.shape))
        } else if let (Some(a), Some(b)) = (s.orientation, first.orientation)
            && !close(&a, &b)
        {
            Some(format!("orientation {a:?}, unlike {} ({b:?})", first.name))
        } else if let (Some(a), Some(b)) = (s.pixel_spacing, first.pixel_spacing)
            && !close(&a, &b)
        {
            Some(format!("pixel spacing {a:?}, unlike {} ({b:?})", first.name))
        } else {
            None
        };
        if let Some(why) = differs {
            return Err(format!("{}: not part of the same series: {why}; give one series at a time", s.name));
        }
    }
    Ok(())
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// The unit slice normal (row direction × column direction), `None` for degenerate orientations.
fn slice_normal(o: [f64; 6]) -> Option<[f64; 3]> {
    let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
    let len = dot(n, n).sqrt();
    (len > 0.5).then(|| n.map(|v| v / len))
}

/// Sorts the slices along the normal and returns the slice step (mm), refusing repeated positions and
/// uneven steps (a missing slice).
fn sort_by_position(slices: &mut [Slice], normal: [f64; 3]) -> Result<Option<f64>, String> {
    let along = |s: &Slice| s.position.map_or(0.0, |p| dot(p, normal));
    slices.sort_by(|a, b| along(a).total_cmp(&along(b)));
    let steps: Vec<f64> = slices.windows(2).map(|w| along(&w[1]) - along(&w[0])).collect();
    if let Some(i) = steps.iter().position(|&d| d < SAME_POSITION_MM) {
        let (a, b) = (&slices[i], &slices[i + 1]);
        return Err(format!(
            "{} and {}: same slice position ({:.3} mm along the normal); one series must hold one image per position (several echoes, phases or time points?)",
            a.name, b.name, along(a)
        ));
    }
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    // The lower median: with two steps, one of them doubled by a missing slice, the smaller is the true one.
    let Some(&step) = sorted.get(sorted.len().saturating_sub(1) / 2) else { return Ok(None) };
    if let Some(i) = steps.iter().position(|&d| (d - step).abs() > 0.01 * step + 0.01) {
        return Err(format!(
            "gap in the series between {} and {}: {:.3} mm apart where the slices are {step:.3} mm apart (missing or extra slice?)",
            slices[i].name, slices[i + 1].name, steps[i]
        ));
    }
    Ok(Some(step))
}

/// Sorts by InstanceNumber when every file has one, else by file name; repeated numbers are refused.
fn sort_by_instance(slices: &mut [Slice]) -> Result<(), String> {
    if slices.iter().any(|s| s.instance.is_none()) {
        slices.sort_by(|a, b| a.name.cmp(&b.name));
        return Ok(());
    }
    slices.sort_by_key(|s| s.instance);
    match slices.windows(2).find(|w| w[0].instance == w[1].instance) {
        Some(w) => Err(format!("{} and {}: same InstanceNumber {:?} and no slice positions to order them", w[0].name, w[1].name, w[0].instance)),
        None => Ok(()),
    }
}

/// Voxel (x, y, z) -> RAS+ mm: DICOM's LPS directions scaled by the spacing, x and y negated for RAS. Without
/// an orientation, the spacing diagonal. (Ordered by InstanceNumber, the slices may run against the normal;
/// without positions there is no way to tell.)
fn affine(orientation: Option<[f64; 6]>, normal: Option<[f64; 3]>, origin: [f64; 3], spacing: [f64; 3]) -> [[f64; 4]; 4] {
    let (Some(o), Some(n)) = (orientation, normal) else {
        let [sx, sy, sz] = spacing;
        return [[sx, 0.0, 0.0, 0.0], [0.0, sy, 0.0, 0.0], [0.0, 0.0, sz, 0.0], [0.0, 0.0, 0.0, 1.0]];
    };
    let columns = [[o[0], o[1], o[2]], [o[3], o[4], o[5]], n];
    let mut affine = super::IDENTITY;
    for (r, flip) in [-1.0, -1.0, 1.0].into_iter().enumerate() {
        for c in 0..3 {
            affine[r][c] = flip * columns[c][r] * spacing[c];
        }
        affine[r][3] = flip * origin[r];
    }
    affine
}

/// Reads the files of one series (in any order) into a volume ordered along the slice normal.
pub fn read_dicom_series(files: &[InputFile]) -> Result<Volume, String> {
    let first = files.first().ok_or("no DICOM files given")?;
    checked_len(&first.name, 1, 1, files.len(), 1)?;
    let mut slices = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        // The whole volume's size is checked as soon as one file's is known, before the rest is decoded.
        let others = slices.len() + files.len() - 1 - i;
        slices.extend(parse_file(file, others)?);
    }
    check_one_series(&slices)?;
    let orientation = slices[0].orientation;
    let normal = orientation.and_then(slice_normal);
    let positioned = slices.iter().all(|s| s.position.is_some());
    let step = match normal {
        Some(n) if positioned => sort_by_position(&mut slices, n)?,
        _ => {
            sort_by_instance(&mut slices)?;
            None
        }
    };
    let head = &slices[0];
    let (cols, rows, samples, bits) = head.shape;
    let [row_mm, col_mm] = head.pixel_spacing.unwrap_or([1.0, 1.0]);
    let spacing = [col_mm, row_mm, step.or(head.thickness).unwrap_or(1.0)];
    let origin = head.position.unwrap_or_default();
    let (modality, depth, names) = (head.modality, slices.len(), slices.iter().map(|s| s.label.clone()).collect());
    let data = slices.into_iter().flat_map(|s| s.pixels).collect();
    let mut volume = Volume::new(&first.name, SourceKind::Dicom, [cols, rows, depth, samples], data)?;
    volume.spacing = spacing;
    volume.affine = affine(orientation, normal, origin, spacing);
    (volume.modality, volume.bit_depth, volume.slice_names) = (modality, bits, names);
    Ok(volume)
}

/// Reads the DICOM files of a directory as one series (natively only). DICOMDIR index files and files without
/// the DICOM marker (stray notes, thumbnails) are skipped, as DICOM tools do.
#[cfg(not(target_family = "wasm"))]
pub fn read_dicom_dir(dir: &std::path::Path) -> Result<Volume, String> {
    let is_index = |f: &InputFile| file_stem(&f.name).eq_ignore_ascii_case("DICOMDIR");
    let files: Vec<InputFile> =
        super::read_dir_files(dir)?.into_iter().filter(|f| has_dicom_marker(&f.bytes) && !is_index(f)).collect();
    if files.is_empty() {
        return Err(format!("{}: no DICOM files in this directory", dir.display()));
    }
    read_dicom_series(&files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::uids;
    use dicom_object::{InMemDicomObject, meta::FileMetaTableBuilder};
    use crate::imaging::tests::assert_affine_close;

    /// What a test slice file says; `None` fields are left out of the file.
    #[derive(Clone)]
    struct Spec {
        series: &'static str,
        modality: &'static str,
        instance: Option<i32>,
        z: Option<f64>,
        photometric: &'static str,
        signed: bool,
        bits: u16,
        rescale: (f64, f64),
        stored: Vec<i32>,
    }

    const W: usize = 16;
    const H: usize = 12;

    /// HU of voxel (x, y) in slice k of the test CT: distinct per slice, even (slope 2 stores it exactly).
    fn hu(k: usize, x: usize, y: usize) -> i32 {
        -1000 + 100 * k as i32 + 2 * (x + W * y) as i32
    }

    fn ct_spec(k: usize) -> Spec {
        Spec {
            series: "1.2.3.4",
            modality: "CT",
            instance: Some(k as i32 + 1),
            z: Some(-50.0 + 2.5 * k as f64),
            photometric: "MONOCHROME2",
            signed: false,
            bits: 16,
            rescale: (2.0, -1024.0),
            stored: (0..W * H).map(|i| (hu(k, i % W, i / W) + 1024) / 2).collect(),
        }
    }

    /// A Part-10 file (explicit VR little endian) of `spec`: a `W`×`H` axial slice.
    fn write(spec: &Spec) -> Vec<u8> {
        let ds = |v: String| PrimitiveValue::from(v);
        let us = |v: u16| PrimitiveValue::from(v);
        let mut obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(uids::CT_IMAGE_STORAGE)),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(format!("1.2.3.4.{}", spec.instance.unwrap_or(0)))),
            DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from(spec.modality)),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(spec.series)),
            DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds("1\\0\\0\\0\\1\\0".into())),
            DataElement::new(tags::PIXEL_SPACING, VR::DS, ds("0.7\\0.8".into())),
            DataElement::new(tags::SLICE_THICKNESS, VR::DS, ds("3".into())),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, us(1)),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(spec.photometric)),
            DataElement::new(tags::ROWS, VR::US, us(H as u16)),
            DataElement::new(tags::COLUMNS, VR::US, us(W as u16)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, us(spec.bits)),
            DataElement::new(tags::BITS_STORED, VR::US, us(spec.bits)),
            DataElement::new(tags::HIGH_BIT, VR::US, us(spec.bits - 1)),
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, us(spec.signed.into())),
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, ds(spec.rescale.0.to_string())),
            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, ds(spec.rescale.1.to_string())),
        ]);
        if let Some(i) = spec.instance {
            obj.put(DataElement::new(tags::INSTANCE_NUMBER, VR::IS, ds(i.to_string())));
        }
        if let Some(z) = spec.z {
            obj.put(DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, ds(format!("-12.5\\30\\{z}"))));
        }
        let pixels = match spec.bits {
            8 => DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(spec.stored.iter().map(|&v| v as u8).collect::<Vec<_>>())),
            _ => DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(spec.stored.iter().map(|&v| v as u16).collect())),
        };
        obj.put(pixels);
        let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)).unwrap();
        let mut out = Vec::new();
        file.write_all(&mut out).unwrap();
        out
    }

    fn files(specs: &[Spec], order: &[usize]) -> Vec<InputFile> {
        order.iter().map(|&k| InputFile { name: format!("ct/IM{k:04}.dcm"), bytes: write(&specs[k]) }).collect()
    }

    fn ct_series(n: usize) -> Vec<Spec> {
        (0..n).map(ct_spec).collect()
    }

    #[test]
    fn shuffled_ct_series_is_ordered_in_hu_with_geometry() {
        let v = read_dicom_series(&files(&ct_series(5), &[3, 0, 4, 1, 2])).unwrap();
        assert_eq!((v.width, v.height, v.depth, v.channels), (W, H, 5, 1));
        assert_eq!((v.modality, v.kind, v.bit_depth), (Modality::Ct, SourceKind::Dicom, 16));
        for k in 0..5 {
            let expected: Vec<f32> = (0..W * H).map(|i| hu(k, i % W, i / W) as f32).collect();
            assert_eq!(v.slice(k), expected.as_slice(), "slice {k}");
        }
        assert_eq!(v.slice_names, ["IM0000", "IM0001", "IM0002", "IM0003", "IM0004"]);
        assert!((v.spacing[0] - 0.8).abs() < 1e-9 && (v.spacing[1] - 0.7).abs() < 1e-9 && (v.spacing[2] - 2.5).abs() < 1e-9);
        let expected = [[-0.8, 0.0, 0.0, 12.5], [0.0, -0.7, 0.0, -30.0], [0.0, 0.0, 2.5, -50.0], [0.0, 0.0, 0.0, 1.0]];
        assert_affine_close(&v.affine, &expected);
    }

    #[test]
    fn instance_numbers_order_slices_without_positions() {
        let specs: Vec<Spec> = ct_series(3).into_iter().map(|s| Spec { z: None, ..s }).collect();
        let v = read_dicom_series(&files(&specs, &[2, 0, 1])).unwrap();
        assert_eq!(v.slice(2)[0], hu(2, 0, 0) as f32);
        assert_eq!(v.spacing[2], 3.0); // SliceThickness
        let mut same = specs.clone();
        same[1].instance = Some(1);
        assert!(read_dicom_series(&files(&same, &[0, 1])).unwrap_err().contains("same InstanceNumber"));
    }

    #[test]
    fn missing_slice_is_a_gap() {
        let err = read_dicom_series(&files(&ct_series(5), &[0, 1, 3, 4])).unwrap_err();
        assert!(err.contains("gap") && err.contains("IM0001") && err.contains("IM0003"), "{err}");
    }

    #[test]
    fn repeated_position_is_refused() {
        let mut specs = ct_series(3);
        specs[2].z = specs[1].z;
        let err = read_dicom_series(&files(&specs, &[0, 1, 2])).unwrap_err();
        assert!(err.contains("same slice position"), "{err}");
    }

    #[test]
    fn mixed_series_names_the_odd_file() {
        let mut specs = ct_series(3);
        specs[2].series = "9.9.9";
        let err = read_dicom_series(&files(&specs, &[0, 1, 2])).unwrap_err();
        assert!(err.starts_with("ct/IM0002.dcm: not part of the same series"), "{err}");
        let mut eight = ct_series(2);
        (eight[1].bits, eight[1].stored) = (8, vec![0; W * H]);
        assert!(read_dicom_series(&files(&eight, &[0, 1])).unwrap_err().starts_with("ct/IM0001.dcm:"));
    }

    #[test]
    fn truncated_and_foreign_files_are_named() {
        let mut input = files(&ct_series(2), &[0, 1]);
        let half = input[1].bytes.len() / 2;
        input[1].bytes.truncate(half);
        assert!(read_dicom_series(&input).unwrap_err().starts_with("ct/IM0001.dcm: unreadable or truncated"));
        input[1].bytes = b"not dicom at all".to_vec();
        assert!(read_dicom_series(&input).unwrap_err().contains("IM0001.dcm: not a DICOM file"));
        input[1].bytes.truncate(0);
        assert!(read_dicom_series(&input).is_err());
        assert!(read_dicom_series(&[]).is_err());
    }

    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn directory_skips_index_and_foreign_files() {
        let dir = std::env::temp_dir().join(format!("memseg-dicom-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in files(&ct_series(3), &[2, 0, 1]) {
            std::fs::write(dir.join(file.name.trim_start_matches("ct/")), file.bytes).unwrap();
        }
        std::fs::write(dir.join("DICOMDIR"), b"\0".repeat(128).into_iter().chain(*b"DICM").collect::<Vec<u8>>()).unwrap();
        std::fs::write(dir.join("notes.txt"), b"not an image").unwrap();
        let read = crate::imaging::read_path(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let v = read.unwrap();
        assert_eq!((v.depth, v.slice_names[0].as_str(), v.slice(2)[0]), (3, "IM0000", hu(2, 0, 0) as f32));
    }

    #[test]
    fn signed_monochrome1_mr_is_inverted_and_8bit_is_read() {
        let stored: Vec<i32> = (0..W * H).map(|i| i as i32 - 100).collect();
        let mr = Spec { modality: "MR", photometric: "MONOCHROME1", signed: true, rescale: (1.0, 0.0), stored: stored.clone(), ..ct_spec(0) };
        let v = read_dicom_series(&files(&[mr], &[0])).unwrap();
        assert_eq!(v.modality, Modality::Mr);
        // Signed 16-bit range [-32768, 32767]: inverted value = -1 - stored.
        assert_eq!(v.data[..3], [99.0, 98.0, 97.0]);
        let ct1 = Spec { photometric: "MONOCHROME1", signed: true, rescale: (1.0, -1000.0), stored, ..ct_spec(0) };
        assert_eq!(read_dicom_series(&files(&[ct1], &[0])).unwrap().data[0], -1100.0); // CT stays in HU
        let eight = Spec { modality: "OT", bits: 8, rescale: (1.0, 0.0), stored: (0..W * H).map(|i| (i % 256) as i32).collect(), ..ct_spec(0) };
        let v = read_dicom_series(&files(&[eight], &[0])).unwrap();
        assert_eq!((v.bit_depth, v.modality, v.data[5], v.spacing[2]), (8, Modality::Other, 5.0, 3.0));
    }
}
