//! Named tensors from and to safetensors files. Every error names the file,
//! and where it applies the tensor, so a truncated or mismatched checkpoint
//! is one clear line for the user.

use crate::device::Device;
use crate::tensor::Tensor;
use crate::DType;
use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use safetensors::{Dtype as StDtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct WeightMap {
    /// Shown in errors: the file the tensors came from.
    source: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
}

/// Widens one stored tensor to f32 host values.
fn to_f32(name: &str, dtype: StDtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let chunks = |n: usize| bytes.chunks_exact(n);
    Ok(match dtype {
        StDtype::F32 => chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        StDtype::F16 => chunks(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StDtype::BF16 => chunks(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StDtype::F64 => chunks(8).map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32).collect(),
        other => bail!("tensor `{name}` has dtype {other:?}; expected f32, f16 or bf16"),
    })
}

impl WeightMap {
    /// Loads every tensor of a safetensors file as f32 on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<WeightMap> {
        Self::load_as(path, device, DType::F32)
    }

    /// Loads every tensor of a safetensors file on `device`, stored as
    /// `dtype` (converted on the host, so only `dtype` crosses to a GPU).
    pub fn load_as(path: &Path, device: &Device, dtype: DType) -> Result<WeightMap> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read weight file {}", path.display()))?;
        Self::from_bytes(&bytes, path, device, dtype)
    }

    /// Parses safetensors `bytes` (errors call them `source`), every tensor
    /// stored as `dtype` on `device`. A tensor holding NaN or an infinity is
    /// an error naming it: no weight, checkpoint or optimizer state of the
    /// engine is legitimately non-finite.
    pub fn from_bytes(bytes: &[u8], source: &Path, device: &Device, dtype: DType) -> Result<WeightMap> {
        let parsed = SafeTensors::deserialize(bytes).map_err(|e| {
            anyhow!("{} is not a valid safetensors file (truncated, or another format?): {e}", source.display())
        })?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| anyhow!("{}: unreadable safetensors header: {e}", source.display()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in parsed.tensors() {
            let values = to_f32(&name, view.dtype(), view.data()).with_context(|| source.display().to_string())?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                bail!(
                    "{}: tensor `{name}` holds {} at element {i} (of {}); the file is damaged or was written from a diverged run",
                    source.display(),
                    values[i],
                    values.len()
                );
            }
            let tensor = Tensor::from_vec_dtype(values, view.shape().to_vec(), dtype, device)?;
            tensors.insert(name, tensor);
        }
        Ok(WeightMap { source: source.to_path_buf(), tensors, metadata: header.metadata().clone().unwrap_or_default() })
    }

    /// A map built in memory; `source` is what errors will call it.
    pub fn from_tensors(source: impl Into<PathBuf>, tensors: impl IntoIterator<Item = (String, Tensor)>) -> WeightMap {
        WeightMap { source: source.into(), tensors: tensors.into_iter().collect(), metadata: HashMap::new() }
    }

    /// An empty map with this one's source and metadata, for renamings.
    pub fn empty_like(&self) -> WeightMap {
        WeightMap { source: self.source.clone(), tensors: BTreeMap::new(), metadata: self.metadata.clone() }
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), tensor);
    }

    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    pub fn get(&self, name: &str) -> Result<Tensor> {
        self.tensors.get(name).cloned().ok_or_else(|| anyhow!("{}: missing tensor `{name}`", self.source.display()))
    }

    /// The tensor `name`, which must have exactly `dims`.
    pub fn get_shaped(&self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.dims() != dims {
            bail!("{}: tensor `{name}` has shape {} but {dims:?} was expected", self.source.display(), t.shape());
        }
        Ok(t)
    }

    /// Every tensor stored as `dtype`, for a map built in memory (a file is
    /// read straight into its dtype by [`WeightMap::load_as`]); the source
    /// and metadata are kept.
    pub fn to_dtype(&self, dtype: DType) -> Result<WeightMap> {
        let tensors = self
            .tensors
            .iter()
            .map(|(name, t)| Ok((name.clone(), t.to_dtype(dtype)?)))
            .collect::<Result<BTreeMap<_, _>>>()
            .with_context(|| format!("{}: converting the weights to {dtype}", self.source.display()))?;
        Ok(WeightMap { source: self.source.clone(), tensors, metadata: self.metadata.clone() })
    }

    /// The shape of `name`, or an error naming the file and tensor.
    pub fn dims_of(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.get(name)?.dims().to_vec())
    }

    /// Writes `tensors` as f32 safetensors, atomically: a temporary file in
    /// the same folder, then a rename, so an interrupted write never leaves a
    /// half-written file under `path`.
    pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<()> {
        Self::save_as(path, tensors, metadata, DType::F32)
    }

    /// [`WeightMap::save`] with the values stored as `dtype` (f32, f16 or
    /// bf16, rounded to nearest).
    pub fn save_as(
        path: &Path,
        tensors: &[(String, Tensor)],
        metadata: HashMap<String, String>,
        dtype: DType,
    ) -> Result<()> {
        let stored = match dtype {
            DType::F32 => StDtype::F32,
            DType::F16 => StDtype::F16,
            DType::BF16 => StDtype::BF16,
            DType::U32 => bail!("cannot store weights as {dtype}"),
        };
        let mut buffers = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            if t.dtype() == DType::U32 {
                bail!("cannot save index tensor `{name}`");
            }
            let values = t.to_vec()?;
            let bytes: Vec<u8> = match dtype {
                DType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
                DType::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
                _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            buffers.push((name.clone(), t.dims().to_vec(), bytes));
        }
        let views = buffers
            .iter()
            .map(|(name, dims, bytes)| {
                Ok((name.clone(), safetensors::tensor::TensorView::new(stored, dims.clone(), bytes)?))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
            .map_err(|e| anyhow!("cannot serialise tensors for {}: {e}", path.display()))?;
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(views, Some(metadata), &tmp)
            .map_err(|e| anyhow!("cannot write {}: {e}", tmp.display()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot flush {} to disk", tmp.display()))?;
        crate::train::fault::point("tensors-tmp");
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    }
}
