//! memseg's NIfTI reader against nibabel on the files `tests/fixtures/make_nifti_fixtures.py` writes: NIfTI-2
//! (little- and big-endian, sform and qform) and each volume of a 4-D file, which without a chosen volume is
//! refused with the count and how to choose. The page runs the same reader (tests/e2e/dicom.test.mjs).

use memseg::imaging::{InputFile, ReadOptions, read_files, read_files_with};
use serde_json::Value;
use std::path::Path;

#[test]
fn every_fixture_reads_as_nibabel_reads_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nifti");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    for (name, case) in reference.as_object().unwrap() {
        let file_name = case["file"].as_str().unwrap();
        let file = InputFile { name: file_name.into(), bytes: std::fs::read(dir.join(file_name)).unwrap() };
        let volumes = case["volumes"].as_u64().unwrap();
        if volumes > 1 {
            let refused = read_files(std::slice::from_ref(&file)).unwrap_err();
            assert!(refused.contains(&format!("{volumes} volumes")) && refused.contains("--volume"), "{name}: {refused}");
            let beyond = read_files_with(std::slice::from_ref(&file), ReadOptions { volume: Some(volumes as usize) }).unwrap_err();
            assert!(beyond.contains(&format!("holds {volumes}")), "{name}: {beyond}");
        }
        for read in case["reads"].as_array().unwrap() {
            let volume = read["volume"].as_u64().map(|v| v as usize);
            let v = read_files_with(std::slice::from_ref(&file), ReadOptions { volume }).unwrap_or_else(|e| panic!("{name}: {e}"));
            let shape: Vec<usize> = read["shape"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap() as usize).collect();
            assert_eq!(vec![v.width, v.height, v.depth], shape, "{name} {volume:?}");
            let spacing: Vec<f64> = read["spacing"].as_array().unwrap().iter().map(|n| n.as_f64().unwrap()).collect();
            assert!(v.spacing.iter().zip(&spacing).all(|(a, b)| (a - b).abs() < 1e-6), "{name}: spacing {:?} vs {spacing:?}", v.spacing);
            // NIfTI-2 stores the affine in float64; memseg keeps float32 (1e-7 relative, 1e-5 mm here).
            for (r, row) in read["affine"].as_array().unwrap().iter().enumerate() {
                for (c, x) in row.as_array().unwrap().iter().enumerate() {
                    assert!((v.affine[r][c] - x.as_f64().unwrap()).abs() < 1e-4, "{name}: affine[{r}][{c}] {} vs {x}", v.affine[r][c]);
                }
            }
            let expected: Vec<f64> = read["values"].as_array().unwrap().iter().map(|n| n.as_f64().unwrap()).collect();
            assert_eq!(v.data.len(), expected.len(), "{name}");
            // Scaled values in f32 (memseg) and f64 (nibabel): equal to f32 rounding.
            let worst = v.data.iter().zip(&expected).map(|(&a, &b)| (a as f64 - b).abs() / b.abs().max(1.0)).fold(0.0, f64::max);
            assert!(worst < 1e-6, "{name} {volume:?}: values differ by {worst} (relative)");
            println!("{name} (volume {volume:?}): {shape:?}, worst relative difference {worst:.1e}, source {:?}", v.source);
        }
    }
}
