//! Label maps and label volumes read from files and checked against the image they label: a mask uploaded
//! for one slice, a ground-truth or support label volume (one NIfTI, or one label image per slice). Generic
//! (bytes in, label values out), so the browser and any native caller share the checks and their messages.

use super::{InputFile, Volume, raster, read_files};

/// Most distinct non-zero values a mask may hold: more means it is not a mask (a photo, a JPEG-compressed
/// mask) rather than a label map. The same limit as `memseg segment`'s masks.
pub const MAX_MASK_CLASSES: usize = 16;

/// The non-zero values among `values`, sorted.
pub fn distinct_labels<'a>(values: impl IntoIterator<Item = &'a u8>) -> Vec<u8> {
    let mut seen = [false; 256];
    values.into_iter().for_each(|&v| seen[v as usize] = true);
    (1..=255u8).filter(|&v| seen[v as usize]).collect()
}

/// A mask file (grey 8- or 16-bit PNG / TIFF; colour is reduced to luma by [`raster::read_mask`]) as a label
/// map of `width` × `height`: values 0..=255, at most [`MAX_MASK_CLASSES`] of them non-zero, not empty.
pub fn mask_from_bytes(bytes: &[u8], name: &str, width: usize, height: usize) -> Result<Vec<u8>, String> {
    let (w, h, values) = raster::read_mask(bytes, name)?;
    if (w, h) != (width, height) {
        return Err(format!("{name}: the mask is {w}x{h} but its image is {width}x{height}"));
    }
    if let Some(v) = values.iter().find(|&&v| v > 255) {
        return Err(format!("{name}: the mask holds the value {v}; label values must be 0..=255"));
    }
    let labels: Vec<u8> = values.iter().map(|&v| v as u8).collect();
    let classes = distinct_labels(&labels);
    if classes.is_empty() {
        return Err(format!("{name}: the mask is empty (no object pixel)"));
    }
    if classes.len() > MAX_MASK_CLASSES {
        return Err(format!(
            "{name}: the mask has {} distinct values: not a binary mask or label map (at most {MAX_MASK_CLASSES} classes)",
            classes.len()
        ));
    }
    Ok(labels)
}

/// A label volume (one NIfTI file, or one grey label image per slice in order) on `like`'s grid: one label
/// map per slice. Refused, with both shapes named, when the grid differs; refused when a value is not a
/// whole number in 0..=255 (most likely the image itself was picked instead of its labels).
pub fn label_volume(files: &[InputFile], like: &Volume) -> Result<Vec<Vec<u8>>, String> {
    on_grid(&read_files(files)?, like)
}

/// A volume read as labels, checked to lie on `like`'s grid and to hold labels ([`label_values`]): the one rule
/// for every label volume, whether the page or `memseg segment --truth` / `memseg eval` read it.
pub fn on_grid(labels: &Volume, like: &Volume) -> Result<Vec<Vec<u8>>, String> {
    let (l, v) = (labels, like);
    if (l.width, l.height, l.depth) != (v.width, v.height, v.depth) {
        return Err(format!(
            "{}: the labels are {}x{}x{} (width x height x slices) but the volume is {}x{}x{}",
            l.source, l.width, l.height, l.depth, v.width, v.height, v.depth
        ));
    }
    label_values(labels)
}

/// A volume's values as label maps, one per slice, after checking it holds labels (grey, whole, 0..=255).
pub fn label_values(labels: &Volume) -> Result<Vec<Vec<u8>>, String> {
    if labels.channels != 1 {
        return Err(format!("{}: {} channels per pixel; a label volume is grey (one value per voxel)", labels.source, labels.channels));
    }
    if let Some((i, v)) = labels.data.iter().enumerate().find(|(_, v)| !(v.fract() == 0.0 && (0.0..=255.0).contains(*v))) {
        let z = i / (labels.width * labels.height);
        return Err(format!(
            "{}: slice {} holds the value {v}: a label volume holds whole values 0..=255 (is this the image rather than its labels?)",
            labels.source,
            z + 1
        ));
    }
    let area = labels.width * labels.height;
    Ok(labels.data.chunks(area).map(|s| s.iter().map(|&v| v as u8).collect()).collect())
}

/// Where a class lies along the slices of a label volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClassExtent {
    pub class: u8,
    /// First and last slice holding the class (inclusive).
    pub first: usize,
    pub last: usize,
    /// The centre of that range, `first + (last - first + 1) / 2`: FS-MedSAM2's support slice (one part).
    pub middle: usize,
    pub voxels: usize,
}

impl ClassExtent {
    /// The centres of `k` equal parts of the class's slices, without repeats: FS-MedSAM2's support slices (`k`
    /// = 1 gives [`middle`](Self::middle)).
    pub fn part_centres(&self, k: usize) -> Vec<usize> {
        let (k, len) = (k.max(1), self.last - self.first + 1);
        let mut zs: Vec<usize> = (0..k).map(|i| self.first + (2 * i + 1) * len / (2 * k)).collect();
        zs.dedup();
        zs
    }
}

/// A label map as `memseg segment` writes it to `<slice>.png`: 0/255 when one class was segmented (`binary`,
/// so that the mask is visible in any viewer), the label values otherwise.
pub fn png_values(labels: &[u8], binary: bool) -> Vec<u8> {
    labels.iter().map(|&v| if binary && v > 0 { 255 } else { v }).collect()
}

/// A label map as 8-bit grey PNG bytes (see [`png_values`] for `binary`): the CLI's `<slice>.png`, the page's
/// PNG export and its drawn masks for the CLI.
pub fn encode_png(width: usize, height: usize, labels: &[u8], binary: bool) -> Result<Vec<u8>, String> {
    let image = image::GrayImage::from_raw(width as u32, height as u32, png_values(labels, binary))
        .ok_or_else(|| format!("the labels do not fill {width}x{height}"))?;
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageFormat::Png).map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok(png.into_inner())
}

/// The extent of every class present in `labels` (slices of label maps), by class value.
pub fn class_extents(labels: &[Vec<u8>]) -> Vec<ClassExtent> {
    let mut extents: Vec<Option<ClassExtent>> = vec![None; 256];
    for (z, slice) in labels.iter().enumerate() {
        let mut counts = [0usize; 256];
        slice.iter().for_each(|&v| counts[v as usize] += 1);
        for class in 1..=255u8 {
            let n = counts[class as usize];
            if n == 0 {
                continue;
            }
            let e = extents[class as usize].get_or_insert(ClassExtent { class, first: z, last: z, middle: z, voxels: 0 });
            e.last = z;
            e.voxels += n;
        }
    }
    let mut out: Vec<ClassExtent> = extents.into_iter().flatten().collect();
    out.iter_mut().for_each(|e| e.middle = e.first + (e.last - e.first + 1) / 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::SourceKind;
    use image::{DynamicImage, ImageBuffer, ImageFormat, Luma};

    fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| Luma([f(x, y)]))).write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn masks_are_checked() {
        assert_eq!(mask_from_bytes(&png(3, 1, |x, _| [0, 255, 2][x as usize]), "m.png", 3, 1).unwrap(), [0, 255, 2]);
        assert!(mask_from_bytes(&png(3, 1, |_, _| 1), "m.png", 4, 1).unwrap_err().contains("3x1 but its image is 4x1"));
        assert!(mask_from_bytes(&png(3, 1, |_, _| 0), "m.png", 3, 1).unwrap_err().contains("empty"));
        assert!(mask_from_bytes(&png(20, 1, |x, _| x as u8 * 10), "m.png", 20, 1).unwrap_err().contains("distinct values"));
        assert!(mask_from_bytes(b"not a png", "m.png", 3, 1).unwrap_err().starts_with("m.png"));
    }

    #[test]
    fn label_volumes_need_the_grid_and_whole_values() {
        let like = Volume::new("ct", SourceKind::Nifti, [2, 1, 3, 1], vec![0.0; 6]).unwrap();
        let files = |pngs: Vec<Vec<u8>>| pngs.into_iter().enumerate().map(|(i, bytes)| InputFile { name: format!("l{i}.png"), bytes }).collect::<Vec<_>>();
        let ok = files(vec![png(2, 1, |_, _| 0), png(2, 1, |x, _| x as u8), png(2, 1, |_, _| 3)]);
        assert_eq!(label_volume(&ok, &like).unwrap(), vec![vec![0, 0], vec![0, 1], vec![3, 3]]);
        let short = files(vec![png(2, 1, |_, _| 0), png(2, 1, |_, _| 0)]);
        let err = label_volume(&short, &like).unwrap_err();
        assert!(err.contains("2x1x2") && err.contains("2x1x3"), "{err}");
        let image = Volume::new("ct.nii", SourceKind::Nifti, [2, 1, 1, 1], vec![0.0, -1000.0]).unwrap();
        assert!(label_values(&image).unwrap_err().contains("value -1000"));
        let half = Volume::new("x.nii", SourceKind::Nifti, [2, 1, 1, 1], vec![0.5, 1.0]).unwrap();
        assert!(label_values(&half).is_err());
    }

    #[test]
    fn support_parts_are_centred() {
        let extent = |first, last| ClassExtent { class: 1, first, last, middle: first + (last - first + 1) / 2, voxels: 1 };
        assert_eq!(extent(10, 19).part_centres(1), vec![15]);
        assert_eq!(extent(0, 8).part_centres(3), vec![1, 4, 7]);
        assert_eq!(extent(5, 5).part_centres(3), vec![5]);
        assert_eq!(extent(3, 12).part_centres(1), vec![extent(3, 12).middle]);
    }

    #[test]
    fn extents_and_middles() {
        let labels = vec![vec![0, 0], vec![1, 0], vec![1, 2], vec![1, 1], vec![0, 0], vec![0, 2]];
        let e = class_extents(&labels);
        assert_eq!(e[0], ClassExtent { class: 1, first: 1, last: 3, middle: 2, voxels: 4 });
        assert_eq!(e[1], ClassExtent { class: 2, first: 2, last: 5, middle: 4, voxels: 2 });
        assert_eq!(e.len(), 2);
    }
}
