//! Reading medical images into one in-memory form, the [`Volume`], and turning its slices into the 8-bit RGB
//! frames SAM2 sees.
//!
//! Everything parses from bytes so the same code runs natively and in the browser; only the helpers that
//! open files or directories are native-only. Errors are `String`s that name the file and the problem, and no
//! reader panics on bad input: sizes read from files are checked against the limits below before anything is
//! allocated.
//!
//! - [`raster`]: PNG / JPEG / TIFF, one file per slice.
//! - [`dicom`]: a DICOM series, ordered in space, rescaled to HU for CT.
//! - [`nifti`]: `.nii` / `.nii.gz` volumes, and the writer for label volumes that overlay their input.
//! - [`intensity`]: windowing / percentiles / min-max to 8-bit RGB.
//! - [`labels`]: label maps and label volumes from files, checked against the image they label.
//! - [`phantom`]: a synthetic CT volume with labelled structures (the browser's sample volume).

pub mod dicom;
mod dicom_pixels;
pub mod intensity;
pub mod labels;
pub mod nifti;
pub mod phantom;
pub mod raster;

use serde::Serialize;

/// Most pixels along one side of a slice. Larger images would not fit the browser's memory once converted
/// to `f32`, and no scanner produces them.
pub const MAX_SIDE: usize = 8192;
/// Most slices in one volume.
pub const MAX_SLICES: usize = 2048;
/// Most values (voxels × channels) in one volume: 1 GiB of `f32`, e.g. a 512 × 512 × 1024 CT.
pub const MAX_VALUES: usize = 1 << 28;

/// The imaging modality, which decides the default intensity mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Ct,
    Mr,
    Other,
}

/// How a volume was read: tells callers which metadata (HU, geometry) is meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// PNG / JPEG / TIFF files: pixel values as stored, no geometry.
    Raster,
    /// A DICOM series: CT values in HU, geometry from the headers.
    Dicom,
    /// A NIfTI-1 volume: scaled values, geometry from the sform / qform.
    Nifti,
}

/// One input file as bytes, named as the user gave it (the name only serves error messages and slice names).
#[derive(Debug, Clone)]
pub struct InputFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A stack of 2-D slices, slice-major: value(z, y, x) = data[(z*height + y)*width + x]; channels 1 (grey) or 3
/// (RGB, interleaved per pixel).
#[derive(Debug, Clone)]
pub struct Volume {
    pub width: usize,
    pub height: usize,
    pub depth: usize,
    pub channels: usize,
    pub data: Vec<f32>,
    /// Voxel size in mm: x (column), y (row), z (slice). 1 where the source does not say.
    pub spacing: [f64; 3],
    /// Voxel (x, y, z) -> RAS+ mm, as a NIfTI sform (row-major, last row 0 0 0 1).
    pub affine: [[f64; 4]; 4],
    pub modality: Modality,
    /// Bits per sample of the source: 8 or 16 for images; 8 / 16 / 32 for DICOM; 8 to 64 for NIfTI.
    pub bit_depth: u8,
    /// One per slice: file stems, or `slice_0007` where one file holds every slice.
    pub slice_names: Vec<String>,
    /// The file (or first file) the volume came from, for messages and metadata.
    pub source: String,
    pub kind: SourceKind,
}

/// The 4 × 4 identity, the affine of sources without geometry.
pub const IDENTITY: [[f64; 4]; 4] =
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];

impl Volume {
    /// A volume with default geometry (1 mm, identity affine, `Other`, 8 bits, `slice_NNNN` names), after
    /// checking the sizes against the limits and the data length against them. Readers then set what their
    /// format knows.
    pub fn new(
        source: &str,
        kind: SourceKind,
        [width, height, depth, channels]: [usize; 4],
        data: Vec<f32>,
    ) -> Result<Volume, String> {
        let expected = checked_len(source, width, height, depth, channels)?;
        if data.len() != expected {
            return Err(format!("{source}: {} values where {width}×{height}×{depth}×{channels} needs {expected}", data.len()));
        }
        Ok(Volume {
            width,
            height,
            depth,
            channels,
            data,
            spacing: [1.0; 3],
            affine: IDENTITY,
            modality: Modality::Other,
            bit_depth: 8,
            slice_names: (0..depth).map(|z| format!("slice_{z:04}")).collect(),
            source: source.to_string(),
            kind,
        })
    }

    /// The values of slice `z` (height × width × channels); empty when `z` is out of range.
    pub fn slice(&self, z: usize) -> &[f32] {
        let len = self.width * self.height * self.channels;
        z.checked_mul(len)
            .and_then(|start| self.data.get(start..start.checked_add(len)?))
            .unwrap_or(&[])
    }
}

/// Checks a volume's sizes against the limits and returns its number of values, so that no size read from a
/// file reaches an allocation unchecked.
pub fn checked_len(name: &str, width: usize, height: usize, depth: usize, channels: usize) -> Result<usize, String> {
    if width == 0 || height == 0 || depth == 0 {
        return Err(format!("{name}: empty image ({width}×{height}, {depth} slices)"));
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!("{name}: {width}×{height} pixels is larger than the {MAX_SIDE}×{MAX_SIDE} supported"));
    }
    if depth > MAX_SLICES {
        return Err(format!("{name}: {depth} slices is more than the {MAX_SLICES} supported"));
    }
    if !(channels == 1 || channels == 3) {
        return Err(format!("{name}: {channels} channels per pixel (only grey or RGB are supported)"));
    }
    let total = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(depth))
        .and_then(|n| n.checked_mul(channels))
        .filter(|&n| n <= MAX_VALUES);
    total.ok_or_else(|| {
        format!("{name}: {width}×{height}×{depth}×{channels} values is more than the {MAX_VALUES} supported")
    })
}

/// The name of a file without its folders and its image extension: `scans/img_007.png` -> `img_007`. Other
/// dots stay, since DICOM files are often named by dotted UIDs.
pub fn file_stem(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    const EXTENSIONS: [&str; 11] = ["png", "jpg", "jpeg", "tif", "tiff", "dcm", "dicom", "ima", "nii", "gz", "img"];
    match base.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) => {
            stem.strip_suffix(".nii").unwrap_or(stem).to_string()
        }
        _ => base.to_string(),
    }
}

/// Which reader understands `bytes`, by their leading magic numbers (names are not trusted: DICOM files often
/// have no extension).
pub fn detect(bytes: &[u8]) -> Option<SourceKind> {
    if dicom::has_dicom_marker(bytes) {
        Some(SourceKind::Dicom)
    } else if nifti::looks_like_nifti(bytes) {
        Some(SourceKind::Nifti)
    } else if raster::is_raster(bytes) {
        Some(SourceKind::Raster)
    } else {
        None
    }
}

/// What the user chose about how their files are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Which volume (0-based) of a 4-D NIfTI file to read; without it a 4-D file is refused with its count.
    pub volume: Option<usize>,
}

/// Reads what the user gave: one NIfTI file, a DICOM series, or a stack of PNG / JPEG / TIFF slices (in the
/// order given). Mixing kinds is an error naming the first file that differs.
pub fn read_files(files: &[InputFile]) -> Result<Volume, String> {
    read_files_with(files, ReadOptions::default())
}

/// [`read_files`] with the user's [`ReadOptions`].
pub fn read_files_with(files: &[InputFile], options: ReadOptions) -> Result<Volume, String> {
    let first = files.first().ok_or("no input files")?;
    let kind = detect(&first.bytes)
        .ok_or_else(|| format!("{}: not a DICOM, NIfTI, PNG, JPEG or TIFF file", first.name))?;
    if let Some(odd) = files.iter().find(|f| detect(&f.bytes) != Some(kind)) {
        return Err(format!("{}: not of the same kind as {} ({kind:?}); give one kind of input at a time", odd.name, first.name));
    }
    match kind {
        SourceKind::Dicom => dicom::read_dicom_series(files),
        SourceKind::Raster => raster::read_raster_stack(files),
        SourceKind::Nifti if files.len() == 1 => nifti::read_nifti_volume(&first.bytes, &first.name, options.volume),
        SourceKind::Nifti => Err(format!("{} NIfTI files given: give one volume at a time", files.len())),
    }
}

/// Reads every regular, non-hidden file of a directory, sorted by name (natively only: the browser hands
/// over bytes).
#[cfg(not(target_family = "wasm"))]
pub fn read_dir_files(dir: &std::path::Path) -> Result<Vec<InputFile>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if path.is_file() && !hidden {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|p| read_input_file(p)).collect()
}

/// Reads one file into an [`InputFile`] named by its path.
#[cfg(not(target_family = "wasm"))]
pub fn read_input_file(path: &std::path::Path) -> Result<InputFile, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(InputFile { name: path.display().to_string(), bytes })
}

/// Reads a path natively: a directory is a DICOM series (see [`dicom::read_dicom_dir`]) or a stack of images,
/// a file is read by its content.
#[cfg(not(target_family = "wasm"))]
pub fn read_path(path: &std::path::Path) -> Result<Volume, String> {
    read_path_with(path, ReadOptions::default())
}

/// [`read_path`] with the user's [`ReadOptions`].
#[cfg(not(target_family = "wasm"))]
pub fn read_path_with(path: &std::path::Path, options: ReadOptions) -> Result<Volume, String> {
    if !path.is_dir() {
        return read_files_with(&[read_input_file(path)?], options);
    }
    let files = read_dir_files(path)?;
    if files.iter().any(|f| dicom::has_dicom_marker(&f.bytes)) {
        dicom::read_dicom_dir(path)
    } else {
        read_files(&files)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Affines equal to 1e-4 (NIfTI stores them as `f32`).
    pub(crate) fn assert_affine_close(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4]) {
        let close = a.iter().flatten().zip(b.iter().flatten()).all(|(x, y)| (x - y).abs() < 1.0e-4);
        assert!(close, "{a:?} != {b:?}");
    }

    #[test]
    fn limits_are_checked_before_allocation() {
        assert_eq!(checked_len("a", 4, 3, 2, 3), Ok(72));
        assert!(checked_len("a", MAX_SIDE + 1, 1, 1, 1).unwrap_err().contains("larger than"));
        assert!(checked_len("a", 1, 1, MAX_SLICES + 1, 1).unwrap_err().contains("slices"));
        assert!(checked_len("a", MAX_SIDE, MAX_SIDE, MAX_SLICES, 3).unwrap_err().contains("more than"));
        assert!(checked_len("a", 0, 1, 1, 1).unwrap_err().contains("empty"));
        assert!(checked_len("a", 1, 1, 1, 2).unwrap_err().contains("channels"));
    }

    #[test]
    fn volume_slices_and_stems() {
        let v = Volume::new("v", SourceKind::Raster, [2, 2, 3, 1], (0..12).map(|i| i as f32).collect()).unwrap();
        assert_eq!(v.slice(1), &[4.0, 5.0, 6.0, 7.0]);
        assert!(v.slice(3).is_empty());
        assert!(v.slice(usize::MAX).is_empty());
        assert_eq!(v.slice_names[2], "slice_0002");
        assert!(Volume::new("v", SourceKind::Raster, [2, 2, 3, 1], vec![0.0; 11]).is_err());
        assert_eq!(file_stem("a/b\\img_007.PNG"), "img_007");
        assert_eq!(file_stem("ct.nii.gz"), "ct");
        assert_eq!(file_stem("1.2.840.10008.5"), "1.2.840.10008.5");
        assert_eq!(file_stem(".png"), ".png");
    }

    #[test]
    fn unknown_or_mixed_inputs_are_refused() {
        let junk = InputFile { name: "notes.txt".into(), bytes: b"hello".to_vec() };
        assert!(read_files(std::slice::from_ref(&junk)).unwrap_err().contains("notes.txt"));
        assert!(read_files(&[]).is_err());
        let png = raster::tests::png_grey8(2, 2, 7);
        let err = read_files(&[InputFile { name: "a.png".into(), bytes: png }, junk]).unwrap_err();
        assert!(err.contains("notes.txt"), "{err}");
    }
}
