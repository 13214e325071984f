//! A synthetic CT-like volume with labelled structures and its ground-truth label volume: the browser's
//! "sample volume" (so a newcomer can try everything without data), usable by the CLI and the tests too.
//!
//! The phantom is an abdomen cross-section in HU: air around an elliptic body (soft tissue under a fat
//! layer), a liver (class 1), two kidneys (class 2) and a vertebra with its marrow (class 3), each an
//! ellipsoid whose cross-section changes from slice to slice, plus a fixed pseudo-random noise of a few HU.
//! Everything is deterministic: the same size gives the same values on every machine.

use super::{Modality, SourceKind, Volume};

/// The sample's size: width, height, slices.
pub const SAMPLE_DIMS: [usize; 3] = [96, 96, 24];
/// The sample's voxel size in mm (x, y, z).
pub const SAMPLE_SPACING: [f64; 3] = [1.5, 1.5, 3.0];

/// The label values and names of the phantom's structures.
pub const CLASSES: [(u8, &str); 3] = [(1, "liver"), (2, "kidneys"), (3, "spine")];

/// A phantom volume (HU, CT) and its labels, ordered like the volume's data: (z*height + y)*width + x.
pub struct Phantom {
    pub volume: Volume,
    pub labels: Vec<u8>,
}

/// An ellipsoid in normalised coordinates (-1..1 on each axis).
struct Ellipsoid {
    centre: [f64; 3],
    radii: [f64; 3],
}

impl Ellipsoid {
    fn contains(&self, p: [f64; 3]) -> bool {
        (0..3).map(|i| ((p[i] - self.centre[i]) / self.radii[i]).powi(2)).sum::<f64>() <= 1.0
    }
}

/// A few HU of fixed noise per voxel (an integer hash, so no random generator is needed).
fn noise(x: usize, y: usize, z: usize) -> f32 {
    let mut h = (x as u32).wrapping_mul(73_856_093) ^ (y as u32).wrapping_mul(19_349_663) ^ (z as u32).wrapping_mul(83_492_791);
    h ^= h >> 13;
    h = h.wrapping_mul(0x5bd1_e995);
    h ^= h >> 15;
    (h % 21) as f32 - 10.0
}

/// The phantom at `[width, height, depth]` (at least 8 × 8 × 1), with the sample's spacing.
pub fn phantom([width, height, depth]: [usize; 3]) -> Result<Phantom, String> {
    if width < 8 || height < 8 || depth == 0 {
        return Err(format!("a phantom needs at least 8×8×1 voxels, not {width}×{height}×{depth}"));
    }
    super::checked_len("phantom", width, height, depth, 1)?;
    let liver = Ellipsoid { centre: [-0.3, -0.1, 0.05], radii: [0.38, 0.32, 0.8] };
    let kidneys = [
        Ellipsoid { centre: [0.45, 0.22, -0.1], radii: [0.13, 0.18, 0.55] },
        Ellipsoid { centre: [-0.42, 0.3, -0.15], radii: [0.12, 0.17, 0.5] },
    ];
    let vertebra = Ellipsoid { centre: [0.0, 0.48, 0.0], radii: [0.15, 0.14, 10.0] };
    let marrow = Ellipsoid { centre: [0.0, 0.48, 0.0], radii: [0.08, 0.07, 10.0] };
    let mut data = Vec::with_capacity(width * height * depth);
    let mut labels = Vec::with_capacity(width * height * depth);
    for z in 0..depth {
        for y in 0..height {
            for x in 0..width {
                let norm = |i: usize, n: usize| (i as f64 + 0.5) / n as f64 * 2.0 - 1.0;
                let p = [norm(x, width), norm(y, height), norm(z, depth)];
                let body = (p[0] / 0.92).powi(2) + (p[1] / 0.75).powi(2);
                let (hu, label) = if body > 1.0 {
                    (-1000.0, 0)
                } else if body > 0.8 {
                    (-100.0, 0)
                } else if marrow.contains(p) {
                    (250.0, 3)
                } else if vertebra.contains(p) {
                    (700.0, 3)
                } else if kidneys.iter().any(|k| k.contains(p)) {
                    (160.0, 2)
                } else if liver.contains(p) {
                    (90.0, 1)
                } else {
                    (20.0, 0)
                };
                data.push(hu + noise(x, y, z));
                labels.push(label);
            }
        }
    }
    let mut volume = Volume::new("sample phantom", SourceKind::Nifti, [width, height, depth, 1], data)?;
    volume.spacing = SAMPLE_SPACING;
    let [sx, sy, sz] = SAMPLE_SPACING;
    volume.affine = [[sx, 0.0, 0.0, 0.0], [0.0, sy, 0.0, 0.0], [0.0, 0.0, sz, 0.0], [0.0, 0.0, 0.0, 1.0]];
    volume.modality = Modality::Ct;
    volume.bit_depth = 16;
    Ok(Phantom { volume, labels })
}

/// The browser's sample volume ([`SAMPLE_DIMS`]).
pub fn sample() -> Phantom {
    phantom(SAMPLE_DIMS).expect("the sample's size is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_has_every_structure_in_its_middle_slice_and_is_deterministic() {
        let Phantom { volume, labels } = sample();
        let [w, h, d] = SAMPLE_DIMS;
        assert_eq!((volume.width, volume.height, volume.depth, volume.modality), (w, h, d, Modality::Ct));
        assert_eq!(labels.len(), w * h * d);
        let mid = &labels[d / 2 * w * h..(d / 2 + 1) * w * h];
        for (class, name) in CLASSES {
            let area = mid.iter().filter(|&&v| v == class).count();
            assert!(area > 40, "{name}: {area} pixels in the middle slice");
        }
        // Labels follow the values: bone is bright, background is air or soft tissue.
        for (v, l) in volume.data.iter().zip(&labels) {
            match l {
                3 => assert!(*v >= 240.0),
                2 => assert!((150.0..=170.0).contains(v)),
                1 => assert!((80.0..=100.0).contains(v)),
                _ => assert!(*v <= 30.0),
            }
        }
        assert_eq!(sample().volume.data, volume.data);
        // The structures change along z: the kidneys are absent from the first slice.
        assert!(!labels[..w * h].contains(&2));
        assert!(phantom([4, 4, 1]).is_err());
    }
}
