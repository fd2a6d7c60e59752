//! Reading and writing the `.npy` files numpy writes.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use npyz::{DType, NpyFile, WriterBuilder};

/// An array read from disk: its shape and values.
pub struct Array<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

fn open(path: &Path) -> Result<(NpyFile<BufReader<File>>, String), String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let npy = NpyFile::new(BufReader::new(file))
        .map_err(|e| format!("{}: not a .npy file ({e})", path.display()))?;
    if npy.order() == npyz::Order::Fortran {
        return Err(format!(
            "{}: Fortran-ordered arrays are not supported (save np.ascontiguousarray(a))",
            path.display()
        ));
    }
    let dtype = match npy.dtype() {
        DType::Plain(t) => t.to_string(),
        other => {
            return Err(format!(
                "{}: unsupported dtype {}",
                path.display(),
                other.descr()
            ));
        }
    };
    Ok((npy, dtype))
}

fn shape(npy: &NpyFile<BufReader<File>>) -> Vec<usize> {
    npy.shape().iter().map(|&d| d as usize).collect()
}

fn data<T: npyz::Deserialize>(
    npy: NpyFile<BufReader<File>>,
    path: &Path,
) -> Result<Vec<T>, String> {
    npy.into_vec()
        .map_err(|e| format!("{}: reading data: {e}", path.display()))
}

/// Reads a float32 (or float64, converted) array.
pub fn read_f32(path: &Path) -> Result<Array<f32>, String> {
    let (npy, dtype) = open(path)?;
    let shape = shape(&npy);
    let data = match dtype.as_str() {
        "<f4" => data::<f32>(npy, path)?,
        "<f8" => data::<f64>(npy, path)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => {
            return Err(format!(
                "{}: dtype {other} where float32 (or float64) is needed",
                path.display()
            ));
        }
    };
    Ok(Array { shape, data })
}

/// What a targets file holds: integer class indices or float probabilities.
pub enum Targets {
    Classes(Array<i64>),
    Floats(Array<f32>),
}

/// Reads targets: int64, int32 or uint32 class indices, or float32 / float64 values.
pub fn read_targets(path: &Path) -> Result<Targets, String> {
    let (npy, dtype) = open(path)?;
    let shape = shape(&npy);
    let classes = |data| {
        Ok(Targets::Classes(Array {
            shape: shape.clone(),
            data,
        }))
    };
    match dtype.as_str() {
        "<i8" => classes(data::<i64>(npy, path)?),
        "<i4" => classes(data::<i32>(npy, path)?.into_iter().map(i64::from).collect()),
        "<u4" => classes(data::<u32>(npy, path)?.into_iter().map(i64::from).collect()),
        "<f4" | "<f8" => Ok(Targets::Floats(read_f32(path)?)),
        other => Err(format!(
            "{}: dtype {other} where int64, int32, uint32 or float32 is needed",
            path.display()
        )),
    }
}

/// Writes a float32 array of `shape` (empty: a 0-d array).
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = File::create(path).map_err(fail)?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .map_err(fail)?;
    writer.extend(data.iter().copied()).map_err(fail)?;
    writer.finish().map_err(fail)
}
