//! Reading and writing the `.npy` files numpy writes.
//!
//! A file's header is not trusted: its shape's element count is computed with checked
//! arithmetic, held against the bytes the file holds before anything is read, and the data read
//! must be exactly that many elements. (npyz multiplies the shape unchecked: a shape that
//! overflows reads as a small array.) The parsing works on any reader, so that the fuzz target
//! (`fuzz/`) drives it from bytes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use npyz::{DType, NpyFile, WriterBuilder};
use wgpu_loss::{Values, bf16, f16};

/// An array read from disk: its shape and values.
#[derive(Debug)]
pub struct Array<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

/// What a targets file holds: integer class indices or float probabilities.
#[derive(Debug)]
pub enum Targets {
    Classes(Array<i64>),
    Floats(FloatArray),
}

/// A float array in the dtype the file holds.
#[derive(Debug)]
pub struct FloatArray {
    pub shape: Vec<usize>,
    pub data: Floats,
}

/// Floats in the dtype the file holds: float32 (float64 converted), float16, or bfloat16
/// (uint16 bits, with `--bf16`: numpy has no bfloat16).
#[derive(Debug)]
pub enum Floats {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl Floats {
    pub fn values(&self) -> Values<'_> {
        match self {
            Floats::F32(v) => v.into(),
            Floats::F16(v) => v.into(),
            Floats::BF16(v) => v.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.values().len()
    }
}

/// The largest header the pre-check reads (numpy's version 1 headers are at most 65,545
/// bytes; larger ones are version 2 and rare).
const PEEK: usize = 1 << 17;

/// Reads a float32 (or float64, converted) array.
pub fn read_f32(path: &Path) -> Result<Array<f32>, String> {
    let (reader, len) = open(path)?;
    parse_f32(&path.display().to_string(), reader, len)
}

/// Reads floats in their own dtype: float32 (or float64, converted), float16, or with `bf16`
/// uint16 holding bfloat16 bits.
pub fn read_floats(path: &Path, bf16: bool) -> Result<FloatArray, String> {
    let (reader, len) = open(path)?;
    parse_floats(&path.display().to_string(), reader, len, bf16)
}

/// Reads targets: int64, int32 or uint32 class indices, or float values as [`read_floats`].
pub fn read_targets(path: &Path, bf16: bool) -> Result<Targets, String> {
    let (reader, len) = open(path)?;
    parse_targets(&path.display().to_string(), reader, len, bf16)
}

fn open(path: &Path) -> Result<(BufReader<File>, u64), String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    Ok((BufReader::with_capacity(PEEK, file), len))
}

/// [`read_f32`] on the `len` bytes of `reader`, errors naming `name`.
pub fn parse_f32<R: Read>(
    name: &str,
    reader: BufReader<R>,
    len: u64,
) -> Result<Array<f32>, String> {
    let (npy, dtype, shape) = header(name, reader, len)?;
    let data = match dtype.as_str() {
        "<f4" => data::<f32, _>(npy, name, &shape)?,
        "<f8" => data::<f64, _>(npy, name, &shape)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => {
            return Err(format!(
                "{name}: dtype {other} where float32 (or float64) is needed"
            ));
        }
    };
    Ok(Array { shape, data })
}

/// [`read_floats`] on the `len` bytes of `reader`, errors naming `name`.
pub fn parse_floats<R: Read>(
    name: &str,
    mut reader: BufReader<R>,
    len: u64,
    bf16: bool,
) -> Result<FloatArray, String> {
    let dtype = peek_descr(name, &mut reader)?;
    let (npy, dtype, shape) = match dtype.as_deref() {
        Some("<f2") | Some("<u2") => header(name, reader, len)?,
        _ => {
            let a = parse_f32(name, reader, len)?;
            return Ok(FloatArray {
                shape: a.shape,
                data: Floats::F32(a.data),
            });
        }
    };
    let data = match (dtype.as_str(), bf16) {
        ("<f2", false) => Floats::F16(data::<f16, _>(npy, name, &shape)?),
        ("<u2", true) => Floats::BF16(
            data::<u16, _>(npy, name, &shape)?
                .into_iter()
                .map(bf16::from_bits)
                .collect(),
        ),
        ("<f2", true) => {
            return Err(format!(
                "{name}: float16, where --bf16 says bfloat16 bits (uint16)"
            ));
        }
        _ => {
            return Err(format!(
                "{name}: uint16 where floats are needed (bfloat16 bits? pass --bf16)"
            ));
        }
    };
    Ok(FloatArray { shape, data })
}

/// The `descr` of the header at the start of `reader`, without consuming it.
fn peek_descr<R: Read>(name: &str, reader: &mut BufReader<R>) -> Result<Option<String>, String> {
    let head = reader.fill_buf().map_err(|e| format!("{name}: {e}"))?;
    let text = String::from_utf8_lossy(head);
    let descr = || {
        let after = &text[text.find("'descr'")? + "'descr'".len()..];
        let quoted = after.trim_start().strip_prefix(':')?.trim_start();
        let quoted = quoted.strip_prefix('\'')?;
        Some(quoted[..quoted.find('\'')?].to_string())
    };
    Ok(descr())
}

/// [`read_targets`] on the `len` bytes of `reader`, errors naming `name`.
pub fn parse_targets<R: Read>(
    name: &str,
    mut reader: BufReader<R>,
    len: u64,
    bf16: bool,
) -> Result<Targets, String> {
    // Peek at the dtype without consuming: floats go through parse_floats.
    let floats = match peek_descr(name, &mut reader)?.as_deref() {
        Some("<u2") => bf16,
        Some(d) => d.starts_with("<f"),
        None => false,
    };
    if floats {
        return parse_floats(name, reader, len, bf16).map(Targets::Floats);
    }
    let (npy, dtype, shape) = header(name, reader, len)?;
    let classes = |data| {
        Ok(Targets::Classes(Array {
            shape: shape.clone(),
            data,
        }))
    };
    match dtype.as_str() {
        "<i8" => classes(data::<i64, _>(npy, name, &shape)?),
        "<i4" => classes(
            data::<i32, _>(npy, name, &shape)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        "<u4" => classes(
            data::<u32, _>(npy, name, &shape)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        other => Err(format!(
            "{name}: dtype {other} where int64, int32, uint32 or float32 is needed"
        )),
    }
}

/// An opened file: its reader past the header, its dtype and its shape.
type Header<R> = (NpyFile<BufReader<R>>, String, Vec<usize>);

/// Parses the header: checks the shape against the bytes the file holds, then lets npyz read it.
/// Returns the file, its dtype and its shape.
fn header<R: Read>(name: &str, mut reader: BufReader<R>, len: u64) -> Result<Header<R>, String> {
    precheck(
        name,
        reader.fill_buf().map_err(|e| format!("{name}: {e}"))?,
        len,
    )?;
    let npy = NpyFile::new(reader).map_err(|e| format!("{name}: not a .npy file ({e})"))?;
    if npy.order() == npyz::Order::Fortran {
        return Err(format!(
            "{name}: Fortran-ordered arrays are not supported (save np.ascontiguousarray(a))"
        ));
    }
    let dtype = match npy.dtype() {
        DType::Plain(t) => t.to_string(),
        other => return Err(format!("{name}: unsupported dtype {}", other.descr())),
    };
    let shape = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| format!("{name}: shape {:?} does not fit this machine", npy.shape()))?;
    Ok((npy, dtype, shape))
}

/// The element count of `shape`, or an error naming the file when it overflows.
fn count(name: &str, shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("{name}: shape {shape:?} has more elements than can be counted"))
}

/// Reads exactly the shape's element count, or fails naming the file.
fn data<T: npyz::Deserialize, R: Read>(
    npy: NpyFile<R>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<T>, String> {
    let expected = count(name, shape)?;
    let data: Vec<T> = npy
        .into_vec()
        .map_err(|e| format!("{name}: reading data: {e}"))?;
    if data.len() != expected {
        return Err(format!(
            "{name}: shape {shape:?} has {expected} elements, the file holds {}",
            data.len()
        ));
    }
    Ok(data)
}

/// Before npyz sees the header (it multiplies the shape unchecked, which panics in builds with
/// overflow checks and wraps in others): the shape's element count, checked, times the item
/// size must be exactly the bytes after the header.
fn precheck(name: &str, head: &[u8], len: u64) -> Result<(), String> {
    let Some((shape, item, data_start)) = peek_header(head) else {
        return Err(format!(
            "{name}: not a .npy file (no header with a 'descr' and a 'shape' in its first {} bytes)",
            PEEK
        ));
    };
    // The product of the non-zero dimensions too: npyz takes partial products for strides.
    let overflow = || format!("{name}: shape {shape:?} has more elements than can be counted");
    shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let elements = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let needed = elements.checked_mul(item);
    let available = len.saturating_sub(data_start);
    match needed {
        Some(n) if n == available => Ok(()),
        _ => Err(format!(
            "{name}: shape {shape:?} has {elements} elements of {item} bytes, the file holds \
             {available} bytes of data"
        )),
    }
}

/// The shape, item size and data offset of a .npy header, when they can be read from `head`.
fn peek_header(head: &[u8]) -> Option<(Vec<u64>, u64, u64)> {
    let rest = head.strip_prefix(b"\x93NUMPY")?;
    let (major, rest) = rest.split_first()?;
    let rest = rest.get(1..)?;
    let (header_len, rest, prefix) = if *major == 1 {
        let n = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        (n, rest.get(2..)?, 10)
    } else {
        let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        (n, rest.get(4..)?, 12)
    };
    let text = std::str::from_utf8(rest.get(..header_len)?).ok()?;
    let after = &text[text.find("'shape'")? + "'shape'".len()..];
    let tuple = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('(')?;
    let tuple = &tuple[..tuple.find(')')?];
    let shape = tuple
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    let descr = &text[text.find("'descr'")? + "'descr'".len()..];
    let descr = descr.trim_start().strip_prefix(':')?.trim_start();
    let descr = descr.strip_prefix('\'')?;
    let descr = &descr[..descr.find('\'')?];
    let item: u64 = descr.get(2..)?.parse().ok()?;
    Some((shape, item, (prefix + header_len) as u64))
}

/// Writes `data` in `dtype` (each value is one of it: a gradient written in that dtype): float32,
/// float16, or bfloat16 as uint16 bits.
pub fn write_in(
    path: &Path,
    shape: &[usize],
    data: &[f32],
    dtype: wgpu_loss::DType,
) -> Result<(), String> {
    match dtype {
        wgpu_loss::DType::F32 => write(path, shape, data),
        wgpu_loss::DType::F16 => {
            let v: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
            write(path, shape, &v)
        }
        wgpu_loss::DType::BF16 => {
            let v: Vec<u16> = data.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
            write(path, shape, &v)
        }
    }
}

/// Writes host values in their dtype (bfloat16 as uint16 bits).
pub fn write_values(path: &Path, shape: &[usize], values: Values<'_>) -> Result<(), String> {
    match values {
        Values::F32(v) => write(path, shape, v),
        Values::F16(v) => write(path, shape, v),
        Values::BF16(v) => {
            let bits: Vec<u16> = v.iter().map(|h| h.to_bits()).collect();
            write(path, shape, &bits)
        }
    }
}

/// Writes an array of `shape` (empty: a 0-d array) in the element type's own dtype.
pub fn write<T: npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[usize],
    data: &[T],
) -> Result<(), String> {
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
