//! NIfTI volumes (`.nii`, `.nii.gz`; NIfTI-1 and NIfTI-2; 3-D, or one chosen volume of a 4-D file) from bytes,
//! and the writer for label volumes.
//!
//! A NIfTI-1 header is parsed by the `nifti` crate (which detects the byte order), a NIfTI-2 one here into the
//! same form; the sizes it declares are then
//! checked against the limits and against the bytes actually present before any voxel is converted, and the
//! gzip stream is only inflated as far as the header says the data goes. Voxel (i, j, k) becomes column
//! i, row j of slice k, so the volume keeps NIfTI's own memory order.

use super::{SourceKind, Volume, checked_len};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use nifti::{Endianness, NiftiHeader};
use std::borrow::Cow;
use std::io::{Read, Write};

/// NIfTI-1 header size; the data of a `.nii` starts after it and 4 extension-flag bytes.
const HEADER_SIZE: usize = 348;
const DATA_OFFSET: usize = 352;
const MAGIC_SINGLE_FILE: &[u8; 4] = b"n+1\0";
/// NIfTI-2 header size and single-file magic; its data starts after the header and 4 extension-flag bytes.
const HEADER2_SIZE: usize = 540;
const MAGIC2_SINGLE_FILE: &[u8; 8] = b"n+2\0\r\n\x1a\n";

/// Whether `bytes` start like a NIfTI-1 or -2 header (size 348 or 540 in either byte order) or like any gzip stream
/// (`.nii.gz`); the reader says what is wrong if it then holds no readable `.nii`.
pub fn looks_like_nifti(bytes: &[u8]) -> bool {
    let size = bytes.get(..4).map(|b| [b[0], b[1], b[2], b[3]]);
    let sized = size.is_some_and(|b| [348, 540].iter().any(|&n| i32::from_le_bytes(b) == n || i32::from_be_bytes(b) == n));
    sized || bytes.starts_with(&[0x1f, 0x8b])
}

/// Where the voxels are and how to read them, from a header checked against the limits.
struct Layout {
    dims: [usize; 3],
    datatype: i16,
    channels: usize,
    offset: usize,
    /// Bytes of voxel data (of the one volume read).
    len: usize,
    /// Volumes along the 4th axis, and the one read.
    volumes: usize,
    index: usize,
}

/// (bytes per voxel, channels, bits of the source) of the datatypes read here.
fn datatype_size(code: i16) -> Option<(usize, usize, u8)> {
    Some(match code {
        2 | 256 => (1, 1, 8),   // uint8, int8
        4 | 512 => (2, 1, 16),  // int16, uint16
        8 | 768 => (4, 1, 32),  // int32, uint32
        16 => (4, 1, 32),       // float32
        64 => (8, 1, 64),       // float64
        128 => (3, 3, 8),       // rgb24
        _ => return None,
    })
}

/// Parses and checks the header: NIfTI-1 (348 bytes) through the `nifti` crate, NIfTI-2 (540 bytes) here.
fn parse_header(bytes: &[u8], name: &str) -> Result<NiftiHeader, String> {
    let size = bytes.get(..4).map(|b| [b[0], b[1], b[2], b[3]]).ok_or_else(|| format!("{name}: too short for a NIfTI header"))?;
    let sizes = [i32::from_le_bytes(size), i32::from_be_bytes(size)];
    if sizes.contains(&(HEADER2_SIZE as i32)) {
        return parse_nifti2(bytes, name, sizes[1] == HEADER2_SIZE as i32);
    }
    if !sizes.contains(&(HEADER_SIZE as i32)) {
        return Err(format!("{name}: not a NIfTI file (header size {} instead of 348 or 540)", sizes[0]));
    }
    let header = NiftiHeader::from_reader(bytes).map_err(|e| format!("{name}: broken NIfTI header: {e}"))?;
    if &header.magic != MAGIC_SINGLE_FILE {
        return Err(format!("{name}: a .hdr/.img pair is not supported (save as a single .nii or .nii.gz)"));
    }
    Ok(header)
}

/// A NIfTI-2 header (the NIfTI-1 fields widened to 64 bits, at other offsets) in the NIfTI-1 form the rest
/// of this reader works on. The `nifti` crate reads NIfTI-1 only. Dimensions are narrowed to NIfTI-1's
/// 16 bits (anything larger is far beyond the limits anyway) and geometry to f32 (1e-7 relative).
fn parse_nifti2(bytes: &[u8], name: &str, big: bool) -> Result<NiftiHeader, String> {
    let h = bytes.get(..HEADER2_SIZE).ok_or_else(|| format!("{name}: too short for a NIfTI-2 header"))?;
    if &h[4..12] != MAGIC2_SINGLE_FILE {
        return Err(format!("{name}: a NIfTI-2 .hdr/.img pair is not supported (save as a single .nii or .nii.gz)"));
    }
    let word = |at: usize| -> [u8; 8] { h[at..at + 8].try_into().unwrap_or_default() };
    let int = |at| if big { i64::from_be_bytes(word(at)) } else { i64::from_le_bytes(word(at)) };
    let float = |at| if big { f64::from_be_bytes(word(at)) } else { f64::from_le_bytes(word(at)) };
    let half = |at: usize| { let b = [h[at], h[at + 1]]; if big { i16::from_be_bytes(b) } else { i16::from_le_bytes(b) } };
    let quad = |at: usize| { let b = [h[at], h[at + 1], h[at + 2], h[at + 3]]; if big { i32::from_be_bytes(b) } else { i32::from_le_bytes(b) } };
    let mut dim = [0u16; 8];
    for (i, d) in dim.iter_mut().enumerate() {
        let value = int(16 + 8 * i);
        *d = u16::try_from(value).map_err(|_| format!("{name}: NIfTI-2 dimension {i} is {value}"))?;
    }
    let narrow = |at: usize| float(at) as f32;
    let code = |at: usize| i16::try_from(quad(at)).unwrap_or(0);
    let row = |at: usize| [narrow(at), narrow(at + 8), narrow(at + 16), narrow(at + 24)];
    let vox_offset = int(168);
    Ok(NiftiHeader {
        sizeof_hdr: HEADER2_SIZE as i32,
        dim,
        datatype: half(12),
        bitpix: half(14),
        pixdim: std::array::from_fn(|i| narrow(104 + 8 * i)),
        // Out-of-range offsets become a value `layout` refuses.
        vox_offset: if (0..1 << 30).contains(&vox_offset) { vox_offset as f32 } else { -1.0 },
        scl_slope: narrow(176),
        scl_inter: narrow(184),
        qform_code: code(344),
        sform_code: code(348),
        quatern_b: narrow(352),
        quatern_c: narrow(360),
        quatern_d: narrow(368),
        quatern_x: narrow(376),
        quatern_y: narrow(384),
        quatern_z: narrow(392),
        srow_x: row(400),
        srow_y: row(432),
        srow_z: row(464),
        magic: *MAGIC_SINGLE_FILE,
        endianness: if big { Endianness::Big } else { Endianness::Little },
        ..NiftiHeader::default()
    })
}

/// The data layout the header promises, refused when it is outside what this reader supports. `volume`
/// picks one 3-D volume of a 4-D file (MR sequences, time points, diffusion directions).
fn layout(header: &NiftiHeader, name: &str, volume: Option<usize>) -> Result<Layout, String> {
    let dim = header.dim().map_err(|e| format!("{name}: bad dimensions {:?}: {e}", header.dim))?;
    let axis = |a: usize| dim.get(a).map_or(1, |&n| n as usize);
    if let Some(extra) = dim.iter().skip(4).find(|&&n| n != 1) {
        return Err(format!("{name}: a {}-D volume with {extra} values along a 5th+ axis (3-D volumes, or one volume of a 4-D file, only)", dim.len()));
    }
    let (dims, volumes) = ([axis(0), axis(1), axis(2)], axis(3));
    let (size, channels, _) = datatype_size(header.datatype)
        .ok_or_else(|| format!("{name}: NIfTI datatype {} is not supported (u8, i8, i16, u16, i32, u32, f32, f64, rgb24)", header.datatype))?;
    if i32::from(header.bitpix) != (size * 8) as i32 {
        return Err(format!("{name}: bitpix {} does not match datatype {}", header.bitpix, header.datatype));
    }
    let values = checked_len(name, dims[0], dims[1], dims[2], channels)?;
    let index = match volume {
        Some(v) if v < volumes => v,
        Some(v) => return Err(format!("{name}: volume {v} asked for, but the file holds {volumes} (0 to {})", volumes - 1)),
        None if volumes == 1 => 0,
        None => {
            return Err(format!(
                "{name}: a 4-D file holding {volumes} volumes (MR sequences, time points or directions): pick one, 0 to {}, with `--volume K` (CLI) or the page's \"4-D NIfTI: volume\" (Images, Reading options)",
                volumes - 1
            ));
        }
    };
    let vox_offset = header.vox_offset;
    if !(vox_offset.is_finite() && vox_offset >= header.sizeof_hdr as f32 && vox_offset < 1.0e9) {
        return Err(format!("{name}: bad vox_offset {vox_offset}"));
    }
    let len = values / channels * size;
    Ok(Layout { dims, datatype: header.datatype, channels, offset: vox_offset as usize + index * len, len, volumes, index })
}

/// Inflates a `.nii.gz` only as far as its header says the data goes (up to the end of the volume read), so
/// that a small file cannot expand into unbounded memory.
fn gunzip(bytes: &[u8], name: &str, volume: Option<usize>) -> Result<Vec<u8>, String> {
    let mut stream = MultiGzDecoder::new(bytes);
    let mut out = Vec::new();
    let inflate = |e: std::io::Error| format!("{name}: cannot decompress: {e}");
    (&mut stream).take(HEADER2_SIZE as u64).read_to_end(&mut out).map_err(inflate)?;
    let layout = layout(&parse_header(&out, name)?, name, volume)?;
    let rest = (layout.offset + layout.len).saturating_sub(out.len());
    stream.take(rest as u64).read_to_end(&mut out).map_err(inflate)?;
    Ok(out)
}

/// Fixed-size chunks of `raw` converted to `f32` by `f`.
fn convert<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    raw.chunks_exact(N).map(|c| f(c.try_into().unwrap_or([0; N]))).collect()
}

/// The voxels as `f32`, in file order, from raw bytes of `datatype` in the given byte order.
fn decode_values(raw: &[u8], datatype: i16, big: bool) -> Vec<f32> {
    macro_rules! number {
        ($t:ty, $n:literal) => {
            convert::<$n>(raw, |b| (if big { <$t>::from_be_bytes(b) } else { <$t>::from_le_bytes(b) }) as f32)
        };
    }
    match datatype {
        256 => raw.iter().map(|&b| b as i8 as f32).collect(),
        4 => number!(i16, 2),
        512 => number!(u16, 2),
        8 => number!(i32, 4),
        768 => number!(u32, 4),
        16 => number!(f32, 4),
        64 => number!(f64, 8),
        _ => raw.iter().map(|&b| f32::from(b)).collect(), // uint8, rgb24
    }
}

/// Rotation of a qform quaternion (b, c, d; a from unit norm), as in `nifti1_io.c`.
fn quaternion_rotation(b: f64, c: f64, d: f64) -> [[f64; 3]; 3] {
    let (mut a, mut b, mut c, mut d) = (1.0 - (b * b + c * c + d * d), b, c, d);
    if a < 1.0e-7 {
        // Not quite unit: renormalise (b, c, d), a 180° rotation.
        let norm = (b * b + c * c + d * d).sqrt();
        (a, b, c, d) = (0.0, b / norm, c / norm, d / norm);
    } else {
        a = a.sqrt();
    }
    [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ]
}

/// Voxel -> RAS+ mm: the sform if set, else the qform, else the pixdim diagonal (NIfTI's "method 1").
fn header_affine(h: &NiftiHeader, spacing: [f64; 3]) -> [[f64; 4]; 4] {
    let row = |r: [f32; 4]| r.map(f64::from);
    if h.sform_code > 0 {
        return [row(h.srow_x), row(h.srow_y), row(h.srow_z), [0.0, 0.0, 0.0, 1.0]];
    }
    let mut affine = super::IDENTITY;
    let mut scale = spacing;
    let mut rotation = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    if h.qform_code > 0 {
        rotation = quaternion_rotation(h.quatern_b.into(), h.quatern_c.into(), h.quatern_d.into());
        scale[2] *= if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let offset = [h.quatern_x, h.quatern_y, h.quatern_z];
        (0..3).for_each(|r| affine[r][3] = f64::from(offset[r]));
    }
    for r in 0..3 {
        for c in 0..3 {
            affine[r][c] = rotation[r][c] * scale[c];
        }
    }
    affine
}

/// Reads a `.nii` or `.nii.gz` (detected by the gzip magic, not the name), NIfTI-1 or NIfTI-2.
pub fn read_nifti(bytes: &[u8], name: &str) -> Result<Volume, String> {
    read_nifti_volume(bytes, name, None)
}

/// Reads volume `volume` (0-based) of a 4-D NIfTI file; `None` for a 3-D file (a 4-D one is then refused,
/// saying how many volumes it holds).
pub fn read_nifti_volume(bytes: &[u8], name: &str, volume: Option<usize>) -> Result<Volume, String> {
    let gzipped = bytes.starts_with(&[0x1f, 0x8b]);
    let raw: Cow<[u8]> = if gzipped { Cow::Owned(gunzip(bytes, name, volume)?) } else { Cow::Borrowed(bytes) };
    let header = parse_header(&raw, name)?;
    let layout = layout(&header, name, volume)?;
    let data = raw.get(layout.offset..).and_then(|d| d.get(..layout.len)).ok_or_else(|| {
        let have = raw.len().saturating_sub(layout.offset);
        format!("{name}: truncated: {have} bytes of voxel data where the header promises {}", layout.len)
    })?;
    let mut values = decode_values(data, layout.datatype, header.endianness == Endianness::Big);
    let (slope, inter) = (header.scl_slope, header.scl_inter);
    // scl_slope 0 means "no scaling" (NIfTI-1); colour voxels are never scaled.
    if slope != 0.0 && slope.is_finite() && inter.is_finite() && layout.channels == 1 {
        values.iter_mut().for_each(|v| *v = *v * slope + inter);
    }
    let [w, h, d] = layout.dims;
    // One volume of a 4-D file is named as such: in messages, reports, and the page's saved work.
    let source = if layout.volumes > 1 { format!("{name} (volume {} of 0–{})", layout.index, layout.volumes - 1) } else { name.to_string() };
    let mut volume = Volume::new(&source, SourceKind::Nifti, [w, h, d, layout.channels], values)?;
    let positive = |p: f32| if p.is_finite() && p != 0.0 { f64::from(p.abs()) } else { 1.0 };
    volume.spacing = [positive(header.pixdim[1]), positive(header.pixdim[2]), positive(header.pixdim[3])];
    volume.affine = header_affine(&header, volume.spacing);
    volume.bit_depth = datatype_size(layout.datatype).map_or(32, |(_, _, bits)| bits);
    Ok(volume)
}

/// A qform: quaternion (b, c, d), offset, and qfac (the sign of the slice axis).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Quatern {
    bcd: [f32; 3],
    offset: [f32; 3],
    qfac: f32,
}

/// The qform of an affine whose columns are orthogonal and as long as `spacing` (as `nifti_mat44_to_quatern`);
/// `None` for sheared or rescaled affines, which only the sform can carry.
fn affine_to_quatern(affine: &[[f64; 4]; 4], spacing: [f64; 3]) -> Option<Quatern> {
    let mut m = [[0.0f64; 3]; 3];
    for c in 0..3 {
        let len = (0..3).map(|r| affine[r][c] * affine[r][c]).sum::<f64>().sqrt();
        if len.is_nan() || len <= 0.0 || (len - spacing[c]).abs() > 1.0e-4 * spacing[c].max(1.0) {
            return None;
        }
        (0..3).for_each(|r| m[r][c] = affine[r][c] / len);
    }
    let dot = |a: usize, b: usize| (0..3).map(|r| m[r][a] * m[r][b]).sum::<f64>().abs();
    if dot(0, 1) > 1.0e-4 || dot(0, 2) > 1.0e-4 || dot(1, 2) > 1.0e-4 {
        return None;
    }
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    (0..3).for_each(|r| m[r][2] *= qfac);
    let [a, b, c, d] = rotation_to_quaternion(&m);
    // The quaternion's sign is free; NIfTI stores the one with a >= 0 (a itself is implied).
    let sign = if a < 0.0 { -1.0 } else { 1.0 };
    Some(Quatern {
        bcd: [b, c, d].map(|v| (v * sign) as f32),
        offset: [affine[0][3], affine[1][3], affine[2][3]].map(|v| v as f32),
        qfac: qfac as f32,
    })
}

/// Unit quaternion (a, b, c, d) of a proper rotation, branching on the largest diagonal term for precision.
fn rotation_to_quaternion(m: &[[f64; 3]; 3]) -> [f64; 4] {
    let trace = m[0][0] + m[1][1] + m[2][2] + 1.0;
    if trace > 0.5 {
        let a = 0.5 * trace.sqrt();
        return [a, 0.25 * (m[2][1] - m[1][2]) / a, 0.25 * (m[0][2] - m[2][0]) / a, 0.25 * (m[1][0] - m[0][1]) / a];
    }
    let xd = 1.0 + m[0][0] - (m[1][1] + m[2][2]);
    let yd = 1.0 + m[1][1] - (m[0][0] + m[2][2]);
    let zd = 1.0 + m[2][2] - (m[0][0] + m[1][1]);
    if xd > 1.0 {
        let b = 0.5 * xd.sqrt();
        [0.25 * (m[2][1] - m[1][2]) / b, b, 0.25 * (m[0][1] + m[1][0]) / b, 0.25 * (m[0][2] + m[2][0]) / b]
    } else if yd > 1.0 {
        let c = 0.5 * yd.sqrt();
        [0.25 * (m[0][2] - m[2][0]) / c, 0.25 * (m[0][1] + m[1][0]) / c, c, 0.25 * (m[1][2] + m[2][1]) / c]
    } else {
        let d = 0.5 * zd.sqrt();
        [0.25 * (m[1][0] - m[0][1]) / d, 0.25 * (m[0][2] + m[2][0]) / d, 0.25 * (m[1][2] + m[2][1]) / d, d]
    }
}

/// What a NIfTI-1 header written here says; every other field is zero.
struct HeaderSpec {
    dims: [usize; 3],
    datatype: i16,
    bitpix: i16,
    spacing: [f64; 3],
    /// (slope, intercept); (0, 0) for none.
    scale: [f32; 2],
    sform: [[f64; 4]; 4],
    qform: Option<Quatern>,
    big_endian: bool,
}

/// The 352 bytes before the data of a `.nii` (header, then a zero extension flag).
fn encode_header(spec: &HeaderSpec) -> Vec<u8> {
    let mut out = vec![0u8; DATA_OFFSET];
    let mut put = |at: usize, le: &[u8]| {
        let bytes: Vec<u8> = if spec.big_endian { le.iter().rev().copied().collect() } else { le.to_vec() };
        out[at..at + bytes.len()].copy_from_slice(&bytes);
    };
    put(0, &(HEADER_SIZE as i32).to_le_bytes());
    let dims = [3, spec.dims[0], spec.dims[1], spec.dims[2], 1, 1, 1, 1];
    dims.iter().enumerate().for_each(|(i, &n)| put(40 + 2 * i, &(n as i16).to_le_bytes()));
    put(70, &spec.datatype.to_le_bytes());
    put(72, &spec.bitpix.to_le_bytes());
    let qfac = spec.qform.map_or(1.0, |q| q.qfac);
    let pixdim = [qfac, spec.spacing[0] as f32, spec.spacing[1] as f32, spec.spacing[2] as f32];
    pixdim.iter().enumerate().for_each(|(i, p)| put(76 + 4 * i, &p.to_le_bytes()));
    put(108, &(DATA_OFFSET as f32).to_le_bytes());
    put(112, &spec.scale[0].to_le_bytes());
    put(116, &spec.scale[1].to_le_bytes());
    put(123, &[2]); // xyzt_units: millimetres
    put(252, &i16::from(spec.qform.is_some()).to_le_bytes()); // qform_code: scanner
    put(254, &1i16.to_le_bytes()); // sform_code: scanner
    if let Some(q) = spec.qform {
        q.bcd.iter().chain(&q.offset).enumerate().for_each(|(i, v)| put(256 + 4 * i, &v.to_le_bytes()));
    }
    for (r, row) in spec.sform.iter().take(3).enumerate() {
        row.iter().enumerate().for_each(|(c, &v)| put(280 + 16 * r + 4 * c, &(v as f32).to_le_bytes()));
    }
    out[344..348].copy_from_slice(MAGIC_SINGLE_FILE);
    out
}

/// Gzip-compresses a finished `.nii`.
fn gzip(nii: &[u8]) -> Result<Vec<u8>, String> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(nii).and_then(|()| encoder.finish()).map_err(|e| format!("cannot compress the labels: {e}"))
}

/// A uint8 label volume (`.nii`, or `.nii.gz` when `gz`) with the dimensions, pixdim and affine (as sform, and
/// as qform where it is a rotation) of `like`, so that it overlays the input in any viewer. `labels` are
/// ordered like `like.data` without channels: (z*height + y)*width + x.
pub fn write_nifti_labels(labels: &[u8], like: &Volume, gz: bool) -> Result<Vec<u8>, String> {
    let dims = [like.width, like.height, like.depth];
    let expected = checked_len(&like.source, dims[0], dims[1], dims[2], 1)?;
    if labels.len() != expected {
        return Err(format!("{}: {} labels for a {}×{}×{} volume", like.source, labels.len(), dims[0], dims[1], dims[2]));
    }
    let spec = HeaderSpec {
        dims,
        datatype: 2,
        bitpix: 8,
        spacing: like.spacing,
        scale: [0.0, 0.0],
        sform: like.affine,
        qform: affine_to_quatern(&like.affine, like.spacing),
        big_endian: false,
    };
    let mut nii = encode_header(&spec);
    nii.extend_from_slice(labels);
    if gz { gzip(&nii) } else { Ok(nii) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::IDENTITY;
    use crate::imaging::tests::assert_affine_close;

    /// An oblique affine: 30° about z, then a flip of the slice axis when `flip` (negative determinant).
    fn oblique(flip: bool) -> ([[f64; 4]; 4], [f64; 3]) {
        let spacing = [0.8, 0.9, 2.5];
        let (s, c) = (30f64.to_radians().sin(), 30f64.to_radians().cos());
        let k = if flip { -2.5 } else { 2.5 };
        let affine = [[c * 0.8, -s * 0.9, 0.0, -100.5], [s * 0.8, c * 0.9, 0.0, 20.25], [0.0, 0.0, k, -7.0], [0.0, 0.0, 0.0, 1.0]];
        (affine, spacing)
    }

    fn label_volume(flip: bool) -> (Volume, Vec<u8>) {
        let labels: Vec<u8> = (0..5 * 4 * 3).map(|i| (i % 7) as u8).collect();
        let mut v = Volume::new("ct.nii.gz", SourceKind::Nifti, [5, 4, 3, 1], labels.iter().map(|&l| l as f32).collect()).unwrap();
        (v.affine, v.spacing) = oblique(flip);
        (v, labels)
    }

    #[test]
    fn labels_round_trip_nii_and_gz() {
        for (flip, gz) in [(false, false), (true, true)] {
            let (like, labels) = label_volume(flip);
            let bytes = write_nifti_labels(&labels, &like, gz).unwrap();
            assert_eq!(bytes.starts_with(&[0x1f, 0x8b]), gz);
            assert!(looks_like_nifti(&bytes));
            let back = read_nifti(&bytes, "labels").unwrap();
            assert_eq!((back.width, back.height, back.depth, back.channels, back.bit_depth), (5, 4, 3, 1, 8));
            assert_eq!(back.data, like.data);
            assert_affine_close(&back.affine, &like.affine);
            assert!(back.spacing.iter().zip(like.spacing).all(|(a, b)| (a - b).abs() < 1e-6));
            assert_eq!((back.kind, back.slice_names[2].as_str()), (SourceKind::Nifti, "slice_0002"));
        }
    }

    #[test]
    fn qform_alone_gives_the_same_affine() {
        for flip in [false, true] {
            let (like, labels) = label_volume(flip);
            let mut bytes = write_nifti_labels(&labels, &like, false).unwrap();
            bytes[254..256].copy_from_slice(&0i16.to_le_bytes()); // sform_code = 0: only the qform is left
            assert_affine_close(&read_nifti(&bytes, "q").unwrap().affine, &like.affine);
            bytes[252..254].copy_from_slice(&0i16.to_le_bytes()); // neither: pixdim diagonal
            let diag = read_nifti(&bytes, "q").unwrap().affine;
            assert_affine_close(&diag, &[[0.8, 0.0, 0.0, 0.0], [0.0, 0.9, 0.0, 0.0], [0.0, 0.0, 2.5, 0.0], IDENTITY[3]]);
        }
    }

    #[test]
    fn sheared_affine_keeps_sform_only() {
        let (mut like, labels) = label_volume(false);
        like.affine[0][1] += 0.3;
        let bytes = write_nifti_labels(&labels, &like, false).unwrap();
        assert_eq!(i16::from_le_bytes([bytes[252], bytes[253]]), 0);
        assert_affine_close(&read_nifti(&bytes, "s").unwrap().affine, &like.affine);
        assert!(write_nifti_labels(&labels[1..], &like, false).unwrap_err().contains("labels"));
    }

    /// A hand-built big-endian int16 volume with scaling and an oblique sform, 4-D with one time point.
    fn big_endian_i16() -> (Vec<u8>, [[f64; 4]; 4]) {
        let (sform, spacing) = oblique(true);
        let spec = HeaderSpec { dims: [3, 2, 2], datatype: 4, bitpix: 16, spacing, scale: [2.0, -10.0], sform, qform: None, big_endian: true };
        let mut bytes = encode_header(&spec);
        bytes[41] = 4; // dim[0] = 4 (big-endian low byte) ...
        bytes[49] = 1; // ... and dim[4] = 1
        for v in -6i16..6 {
            bytes.extend_from_slice(&(v * 100).to_be_bytes());
        }
        (bytes, sform)
    }

    #[test]
    fn hand_built_big_endian_with_scaling() {
        let (bytes, sform) = big_endian_i16();
        let v = read_nifti(&bytes, "be.nii").unwrap();
        assert_eq!((v.width, v.height, v.depth, v.bit_depth), (3, 2, 2, 16));
        let expected: Vec<f32> = (-6..6).map(|v| (v * 100) as f32 * 2.0 - 10.0).collect();
        assert_eq!(v.data, expected);
        assert_eq!(v.slice(1)[0], -10.0); // slice k = 1 starts at voxel 6, raw 0
        assert_affine_close(&v.affine, &sform);
        let input = crate::imaging::InputFile { name: "be.nii.gz".into(), bytes: gzip(&bytes).unwrap() };
        let gz = crate::imaging::read_files(&[input]).unwrap();
        assert_eq!((gz.kind, gz.data), (SourceKind::Nifti, expected));
    }

    #[test]
    fn float_and_colour_datatypes() {
        let spec = |datatype, bitpix| HeaderSpec {
            dims: [2, 1, 1], datatype, bitpix, spacing: [1.0; 3], scale: [0.0, 0.0], sform: IDENTITY, qform: None, big_endian: false,
        };
        let mut f32s = encode_header(&spec(16, 32));
        [1.5f32, f32::NAN].iter().for_each(|v| f32s.extend_from_slice(&v.to_le_bytes()));
        let v = read_nifti(&f32s, "f").unwrap();
        assert!(v.data[0] == 1.5 && v.data[1].is_nan());
        let mut rgb = encode_header(&spec(128, 24));
        rgb.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let v = read_nifti(&rgb, "rgb").unwrap();
        assert_eq!((v.channels, v.data.clone()), (3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    }

    #[test]
    fn broken_files_are_refused_with_their_name() {
        let (good, _) = big_endian_i16();
        let mut bad_size = good.clone();
        bad_size[3] = 0x5d; // big-endian 348 -> 349
        assert!(read_nifti(&bad_size, "a.nii").unwrap_err().contains("a.nii: not a NIfTI file"));
        let mut four_d = good.clone();
        four_d[49] = 2; // dim[4] = 2 volumes, one of them present
        assert!(read_nifti(&four_d, "t.nii").unwrap_err().contains("holding 2 volumes"));
        assert!(read_nifti_volume(&four_d, "t.nii", Some(1)).unwrap_err().contains("truncated"));
        assert_eq!(read_nifti_volume(&four_d, "t.nii", Some(0)).unwrap().source, "t.nii (volume 0 of 0–1)");
        let mut five_d = good.clone();
        (five_d[41], five_d[51]) = (5, 2); // dim[0] = 5, dim[5] = 2
        assert!(read_nifti(&five_d, "5.nii").unwrap_err().contains("5th"));
        let mut zero_dim = good.clone();
        zero_dim[43] = 0; // dim[1] = 0
        assert!(read_nifti(&zero_dim, "z.nii").unwrap_err().starts_with("z.nii: "));
        let mut complex = good.clone();
        complex[70..72].copy_from_slice(&32i16.to_be_bytes());
        assert!(read_nifti(&complex, "c.nii").unwrap_err().contains("datatype 32 is not supported"));
        let mut wrong_bits = good.clone();
        wrong_bits[72..74].copy_from_slice(&8i16.to_be_bytes());
        assert!(read_nifti(&wrong_bits, "b.nii").unwrap_err().contains("bitpix"));
        let mut huge = good.clone();
        huge[42..48].copy_from_slice(&[0x7f, 0xff, 0x7f, 0xff, 0x7f, 0xff]);
        assert!(read_nifti(&huge, "h.nii").unwrap_err().contains("h.nii"));
        let short = &good[..good.len() - 1];
        assert!(read_nifti(short, "s.nii").unwrap_err().contains("s.nii: truncated"));
        assert!(read_nifti(&gzip(short).unwrap(), "s.nii.gz").unwrap_err().contains("truncated"));
        assert!(read_nifti(&good[..100], "h.nii").unwrap_err().contains("h.nii"));
        assert!(read_nifti(&[0x1f, 0x8b, 0, 1, 2], "g.nii.gz").unwrap_err().contains("g.nii.gz"));
        let mut pair = good.clone();
        pair[344..348].copy_from_slice(b"ni1\0");
        assert!(read_nifti(&pair, "p.hdr").unwrap_err().contains(".hdr/.img"));
        let mut nifti2 = good.clone();
        nifti2[..4].copy_from_slice(&540i32.to_le_bytes());
        assert!(read_nifti(&nifti2, "2.nii").unwrap_err().contains("NIfTI-2"));
    }
}
