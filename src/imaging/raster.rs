//! PNG / JPEG / TIFF slices. One file is one slice; a list of files is a stack in the order given.
//!
//! Values are kept as stored (0..255 or 0..65535) so that 16-bit exports keep their range for the intensity
//! mapping; alpha is dropped (SAM2 sees RGB); geometry is unknown, so spacing is 1 and the affine the identity.

use super::{InputFile, MAX_SIDE, SourceKind, Volume, checked_len, file_stem};
use image::{ColorType, DynamicImage, ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// Whether `bytes` start like one of the formats read here.
pub fn is_raster(bytes: &[u8]) -> bool {
    matches!(image::guess_format(bytes), Ok(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Tiff))
}

/// Decodes one image, refusing sizes over [`MAX_SIDE`] before the decoder allocates the pixels.
fn decode(bytes: &[u8], name: &str) -> Result<DynamicImage, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("{name}: {e}"))?;
    if !matches!(reader.format(), Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Tiff)) {
        return Err(format!("{name}: not a PNG, JPEG or TIFF image"));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE as u32);
    limits.max_image_height = Some(MAX_SIDE as u32);
    reader.limits(limits);
    reader.decode().map_err(|e| format!("{name}: cannot decode the image: {e}"))
}

/// The first `keep` samples of every `stride` (drops alpha), widened to `f32`.
fn samples<T: Copy + Into<f32>>(raw: &[T], stride: usize, keep: usize) -> Vec<f32> {
    raw.chunks_exact(stride).flat_map(|px| px[..keep].iter().map(|&v| v.into())).collect()
}

/// One decoded image: (channels, bits per sample, samples).
fn image_samples(img: &DynamicImage, name: &str) -> Result<(usize, u8, Vec<f32>), String> {
    Ok(match img {
        DynamicImage::ImageLuma8(b) => (1, 8, samples(b.as_raw(), 1, 1)),
        DynamicImage::ImageLumaA8(b) => (1, 8, samples(b.as_raw(), 2, 1)),
        DynamicImage::ImageRgb8(b) => (3, 8, samples(b.as_raw(), 3, 3)),
        DynamicImage::ImageRgba8(b) => (3, 8, samples(b.as_raw(), 4, 3)),
        DynamicImage::ImageLuma16(b) => (1, 16, samples(b.as_raw(), 1, 1)),
        DynamicImage::ImageLumaA16(b) => (1, 16, samples(b.as_raw(), 2, 1)),
        DynamicImage::ImageRgb16(b) => (3, 16, samples(b.as_raw(), 3, 3)),
        DynamicImage::ImageRgba16(b) => (3, 16, samples(b.as_raw(), 4, 3)),
        other => return Err(format!("{name}: {:?} pixels are not supported (8- or 16-bit grey or RGB only)", other.color())),
    })
}

/// Reads one image as a one-slice volume.
pub fn read_raster(bytes: &[u8], name: &str) -> Result<Volume, String> {
    read_stack(&[(name, bytes)])
}

/// Reads images as the slices of one volume, in the order given. All must share size, channels and bit
/// depth, else the error names the first file that differs.
pub fn read_raster_stack(files: &[InputFile]) -> Result<Volume, String> {
    read_stack(&files.iter().map(|f| (f.name.as_str(), f.bytes.as_slice())).collect::<Vec<_>>())
}

/// [`read_raster_stack`] on (name, bytes) pairs.
fn read_stack(files: &[(&str, &[u8])]) -> Result<Volume, String> {
    let &(first, _) = files.first().ok_or("no image files given")?;
    let mut data = Vec::new();
    let mut shape = None;
    for &(name, bytes) in files {
        let img = decode(bytes, name)?;
        let (channels, bits, values) = image_samples(&img, name)?;
        let this = (img.width() as usize, img.height() as usize, channels, bits);
        let (w, h, c, b) = *shape.get_or_insert(this);
        if this != (w, h, c, b) {
            let (tw, th, tc, tb) = this;
            return Err(format!(
                "{name}: {tw}×{th} with {tc} channel(s) of {tb} bits, but {first} is {w}×{h} with {c} channel(s) of {b} bits; all slices must match"
            ));
        }
        // Checked per file so that a long list of large images stops before using all memory.
        checked_len(name, w, h, files.len(), c)?;
        data.extend(values);
    }
    let (w, h, c, b) = shape.ok_or("no image files given")?;
    let mut volume = Volume::new(first, SourceKind::Raster, [w, h, files.len(), c], data)?;
    volume.bit_depth = b;
    volume.slice_names = files.iter().map(|&(name, _)| file_stem(name)).collect();
    Ok(volume)
}

/// Reads a label mask: (width, height, labels row-major). Grey 8- or 16-bit values are the labels; colour
/// masks are converted to luma (Rec. 709) so that each colour still gives one distinct value; alpha is dropped.
pub fn read_mask(bytes: &[u8], name: &str) -> Result<(usize, usize, Vec<u16>), String> {
    let img = decode(bytes, name)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let wide = matches!(img.color(), ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16);
    let labels = if wide { img.into_luma16().into_raw() } else { img.into_luma8().iter().map(|&v| u16::from(v)).collect() };
    Ok((w, h, labels))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};

    fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// A `w`×`h` 8-bit grey PNG whose pixel (x, y) is `base + x + 10*y`.
    pub(crate) fn png_grey8(w: u32, h: u32, base: u8) -> Vec<u8> {
        let img = ImageBuffer::from_fn(w, h, |x, y| Luma([base + (x + 10 * y) as u8]));
        encode(DynamicImage::ImageLuma8(img), ImageFormat::Png)
    }

    fn file(name: &str, bytes: Vec<u8>) -> InputFile {
        InputFile { name: name.into(), bytes }
    }

    #[test]
    fn grey8_stack_keeps_values_order_and_names() {
        let files = [file("dir/b_001.png", png_grey8(3, 2, 0)), file("dir/a_002.png", png_grey8(3, 2, 100))];
        let v = read_raster_stack(&files).unwrap();
        assert_eq!((v.width, v.height, v.depth, v.channels, v.bit_depth), (3, 2, 2, 1, 8));
        assert_eq!(v.slice(0), &[0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
        assert_eq!(v.slice(1)[5], 112.0);
        assert_eq!(v.slice_names, ["b_001", "a_002"]);
        assert_eq!((v.spacing, v.affine, v.kind), ([1.0; 3], crate::imaging::IDENTITY, SourceKind::Raster));
    }

    #[test]
    fn grey16_and_tiff16_keep_full_range() {
        let img = ImageBuffer::from_fn(2, 2, |x, y| Luma([(x * 30000 + y * 5000) as u16]));
        for format in [ImageFormat::Png, ImageFormat::Tiff] {
            let v = read_raster(&encode(DynamicImage::ImageLuma16(img.clone()), format), "x").unwrap();
            assert_eq!((v.channels, v.bit_depth), (1, 16));
            assert_eq!(v.data, [0.0, 30000.0, 5000.0, 35000.0], "{format:?}");
        }
    }

    #[test]
    fn rgb_and_alpha_variants() {
        let rgba = ImageBuffer::from_fn(2, 1, |x, _| Rgba([x as u8, 50, 200, 9]));
        let v = read_raster(&encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png), "x").unwrap();
        assert_eq!((v.channels, v.data.clone()), (3, vec![0.0, 50.0, 200.0, 1.0, 50.0, 200.0]));
        let rgb16 = ImageBuffer::from_pixel(1, 1, Rgb([1000u16, 2000, 65535]));
        let v = read_raster(&encode(DynamicImage::ImageRgb16(rgb16), ImageFormat::Png), "x").unwrap();
        assert_eq!((v.channels, v.bit_depth, v.data.clone()), (3, 16, vec![1000.0, 2000.0, 65535.0]));
        let la = ImageBuffer::from_pixel(1, 1, LumaA([77u8, 0]));
        let v = read_raster(&encode(DynamicImage::ImageLumaA8(la), ImageFormat::Png), "x").unwrap();
        assert_eq!((v.channels, v.data.clone()), (1, vec![77.0]));
    }

    #[test]
    fn jpeg_decodes() {
        let img = ImageBuffer::from_pixel(8, 8, Rgb([120u8, 60, 30]));
        let v = read_raster(&encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg), "x.jpg").unwrap();
        assert_eq!((v.width, v.channels), (8, 3));
        assert!((v.data[0] - 120.0).abs() < 4.0);
    }

    #[test]
    fn mismatched_or_broken_files_are_named() {
        let err = read_raster_stack(&[file("a.png", png_grey8(3, 2, 0)), file("odd.png", png_grey8(2, 2, 0))]).unwrap_err();
        assert!(err.starts_with("odd.png:") && err.contains("a.png"), "{err}");
        let rgb = encode(DynamicImage::ImageRgb8(ImageBuffer::new(3, 2)), ImageFormat::Png);
        assert!(read_raster_stack(&[file("a.png", png_grey8(3, 2, 0)), file("c.png", rgb)]).unwrap_err().starts_with("c.png:"));
        let mut cut = png_grey8(16, 16, 0);
        cut.truncate(cut.len() / 2);
        assert!(read_raster(&cut, "cut.png").unwrap_err().starts_with("cut.png:"));
        assert!(read_raster(b"GIF89a....", "g.gif").unwrap_err().contains("g.gif"));
        assert!(read_raster_stack(&[]).is_err());
    }

    #[test]
    fn masks_grey_and_colour() {
        assert_eq!(read_mask(&png_grey8(2, 1, 3), "m").unwrap(), (2, 1, vec![3, 4]));
        let m16 = ImageBuffer::from_fn(2, 1, |x, _| Luma([x as u16 * 300]));
        assert_eq!(read_mask(&encode(DynamicImage::ImageLuma16(m16), ImageFormat::Png), "m").unwrap().2, [0, 300]);
        let colour = ImageBuffer::from_fn(3, 1, |x, _| [Rgb([0u8, 0, 0]), Rgb([255, 0, 0]), Rgb([0, 255, 0])][x as usize]);
        let (_, _, labels) = read_mask(&encode(DynamicImage::ImageRgb8(colour), ImageFormat::Png), "m").unwrap();
        assert_eq!(labels[0], 0);
        assert!(labels[1] > 0 && labels[2] > 0 && labels[1] != labels[2], "{labels:?}");
    }
}
