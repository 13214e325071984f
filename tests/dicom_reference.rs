//! memseg's DICOM reader against a reference reader, on files in the transfer syntaxes and layouts archives
//! hold: `tests/fixtures/make_dicom_fixtures.py` writes small files with pydicom (OpenJPEG, CharLS and libjpeg as
//! codecs) and records what pydicom decodes from them. The browser runs the same reader on the same files
//! (tests/e2e/inputs.test.mjs).

use memseg::imaging::{InputFile, Volume, read_files};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom")
}

fn numbers(case: &Value, key: &str) -> Option<Vec<f64>> {
    case[key].as_array().map(|a| a.iter().map(|v| v.as_f64().unwrap()).collect())
}

fn read(name: &str) -> Result<Volume, String> {
    let bytes = std::fs::read(dir().join(format!("{name}.dcm"))).unwrap();
    read_files(&[InputFile { name: format!("{name}.dcm"), bytes }])
}

/// The geometry memseg derives: PixelSpacing is (row, column) spacing and the volume's is (x, y, z), with 1 mm
/// where the file gives no slice step; the affine is RAS+, DICOM's LPS with x and y negated.
fn check_geometry(name: &str, case: &Value, volume: &Volume) {
    let spacing = numbers(case, "pixel_spacing").unwrap();
    let step = case["slice_step"].as_f64().unwrap_or(1.0);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    let got = volume.spacing;
    assert!(close(got[0], spacing[1]) && close(got[1], spacing[0]) && close(got[2], step), "{name}: spacing {got:?}, expected {spacing:?} and step {step}");
    let origin = [volume.affine[0][3], volume.affine[1][3], volume.affine[2][3]];
    let expected = numbers(case, "position").map_or([0.0; 3], |p| [-p[0], -p[1], p[2]]);
    assert!(origin.iter().zip(expected).all(|(&a, b)| close(a, b)), "{name}: origin {origin:?}, expected {expected:?}");
    if let Some(o) = numbers(case, "orientation") {
        for (axis, flip) in [(0, [-1.0, -1.0, 1.0]), (1, [-1.0, -1.0, 1.0])] {
            let column: Vec<f64> = (0..3).map(|r| volume.affine[r][axis] / got[axis]).collect();
            let cosines: Vec<f64> = (0..3).map(|r| flip[r] * o[3 * axis + r]).collect();
            assert!(column.iter().zip(&cosines).all(|(&a, &b)| close(a, b)), "{name}: direction {axis} is {column:?}, expected {cosines:?}");
        }
    }
}

#[test]
fn every_fixture_decodes_to_the_reference_readers_values_and_geometry() {
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap()).unwrap();
    let cases = reference.as_object().unwrap();
    assert!(cases.len() >= 13, "the fixtures hold {} cases", cases.len());
    for (name, case) in cases {
        let syntax = case["transfer_syntax"].as_str().unwrap();
        if let Some(named) = case["refused"].as_str() {
            let error = read(name).err().unwrap_or_else(|| panic!("{name} ({syntax}) is read, but memseg cannot decode it"));
            assert!(error.contains(named) && error.contains("convert"), "{name}: the refusal does not name {named} and what to do: {error}");
            println!("{name} ({syntax}): refused: {error}");
            continue;
        }
        let volume = read(name).unwrap_or_else(|e| panic!("{name} ({syntax}) is refused: {e}"));
        let size = |key: &str| case[key].as_u64().unwrap() as usize;
        let shape = (size("columns"), size("rows"), size("frames"), size("channels"));
        assert_eq!((volume.width, volume.height, volume.depth, volume.channels), shape, "{name}");
        check_geometry(name, case, &volume);
        let expected = numbers(case, "values").unwrap();
        assert_eq!(volume.data.len(), expected.len(), "{name}");
        let worst = volume.data.iter().zip(&expected).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
        // The bound is 0 for lossless data; make_dicom_fixtures.py says why each lossy one is what it is.
        let bound = case["bound"].as_f64().unwrap();
        assert!(worst <= bound, "{name} ({syntax}): values differ by up to {worst} from the reference (bound {bound})");
        println!("{name} ({syntax}): {shape:?}, {} values, worst difference {worst} (bound {bound})", expected.len());
    }
}
