//! Models as flat parameter vectors, and their wire form.
//!
//! Rules and combination work on one contiguous `[f32]` per model, so that weighing and mixing
//! neighbours costs O(|N_k| * d) with no per-tensor overhead. A [`Layout`] names the tensors
//! that the flat vector is cut into; it is what a model looks like on the wire and what every
//! received model is validated against.

use std::sync::Arc;

use crate::pb;

/// One named tensor of a model: its name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name, such as `theta` or `conv1.weight`.
    pub name: String,
    /// The tensor's dimensions, outermost first.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Creates a spec from a name and a shape.
    pub fn new(name: impl Into<String>, shape: &[usize]) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }

    /// The number of values in the tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The named tensors a flat parameter vector is made of, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    tensors: Vec<TensorSpec>,
    len: usize,
}

impl Layout {
    /// Creates a layout from its tensors, in the order they are laid out in the flat vector.
    pub fn new(tensors: Vec<TensorSpec>) -> Arc<Self> {
        let len = tensors.iter().map(TensorSpec::numel).sum();
        Arc::new(Self { tensors, len })
    }

    /// The total number of parameters.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the model has no parameters at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tensors, in order.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// Each tensor with its range in the flat vector.
    pub fn ranges(&self) -> impl Iterator<Item = (&TensorSpec, std::ops::Range<usize>)> {
        let mut start = 0;
        self.tensors.iter().map(move |t| {
            let range = start..start + t.numel();
            start = range.end;
            (t, range)
        })
    }

    /// The wire form of a flat vector laid out by `self`.
    pub fn to_wire(&self, values: &[f32]) -> Vec<pb::Tensor> {
        self.ranges()
            .map(|(spec, range)| {
                let mut data = Vec::with_capacity(range.len() * 4);
                for v in &values[range] {
                    data.extend_from_slice(&v.to_le_bytes());
                }
                pb::Tensor {
                    name: spec.name.clone(),
                    shape: spec.shape.iter().map(|&d| d as u64).collect(),
                    data,
                }
            })
            .collect()
    }

    /// Decodes and validates a received model against this layout.
    ///
    /// The tensors must come in this layout's order with the same names and shapes, each with
    /// exactly four bytes per value, and every value must be finite.
    pub fn from_wire(&self, tensors: &[pb::Tensor]) -> Result<Vec<f32>, ModelError> {
        if tensors.len() != self.tensors.len() {
            return Err(ModelError::TensorCount {
                expected: self.tensors.len(),
                got: tensors.len(),
            });
        }
        let mut values = Vec::with_capacity(self.len);
        for (spec, tensor) in self.tensors.iter().zip(tensors) {
            if tensor.name != spec.name {
                return Err(ModelError::Name {
                    expected: spec.name.clone(),
                    got: truncate(&tensor.name),
                });
            }
            let same_shape = tensor.shape.len() == spec.shape.len()
                && tensor
                    .shape
                    .iter()
                    .zip(&spec.shape)
                    .all(|(&a, &b)| a == b as u64);
            if !same_shape {
                return Err(ModelError::Shape {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    got: tensor.shape.iter().take(8).copied().collect(),
                });
            }
            if tensor.data.len() != spec.numel() * 4 {
                return Err(ModelError::ByteLength {
                    name: spec.name.clone(),
                    expected: spec.numel() * 4,
                    got: tensor.data.len(),
                });
            }
            for (i, chunk) in tensor.data.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                if !v.is_finite() {
                    return Err(ModelError::NonFinite {
                        name: spec.name.clone(),
                        index: i,
                    });
                }
                values.push(v);
            }
        }
        Ok(values)
    }
}

/// Why a received model was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The model has a different number of tensors.
    #[error("model has {got} tensors, expected {expected}")]
    TensorCount { expected: usize, got: usize },
    /// A tensor is not the one expected at its position.
    #[error("tensor `{got}` found where `{expected}` was expected")]
    Name { expected: String, got: String },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: Vec<u64>,
    },
    /// A tensor's bytes do not hold its shape's number of f32 values.
    #[error("tensor `{name}` has {got} bytes, expected {expected}")]
    ByteLength {
        name: String,
        expected: usize,
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("tensor `{name}` has a non-finite value at index {index}")]
    NonFinite { name: String, index: usize },
    /// The model belongs to another round than the one asked for.
    #[error("model is for round {got}, round {expected} was asked for")]
    Round { expected: u64, got: u64 },
    /// The model claims to come from another node.
    #[error("model claims to come from `{got}`")]
    Sender { got: String },
}

impl ModelError {
    /// A short, stable name for the kind of rejection, for counters and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TensorCount { .. } => "tensor-count",
            Self::Name { .. } => "name",
            Self::Shape { .. } => "shape",
            Self::ByteLength { .. } => "byte-length",
            Self::NonFinite { .. } => "non-finite",
            Self::Round { .. } => "round",
            Self::Sender { .. } => "sender",
        }
    }
}

/// Keeps what a peer sent short enough to log.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Adds `w * x` to `out`, element by element.
pub fn axpy(out: &mut [f32], w: f64, x: &[f32]) {
    let w = w as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        *o += w * v;
    }
}

/// The squared Euclidean distance between two vectors of the same length.
pub fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Arc<Layout> {
        Layout::new(vec![
            TensorSpec::new("w", &[2, 3]),
            TensorSpec::new("b", &[3]),
        ])
    }

    #[test]
    fn wire_round_trip() {
        let layout = layout();
        let values: Vec<f32> = (0..9).map(|i| i as f32 * 0.5 - 1.0).collect();
        let wire = layout.to_wire(&values);
        assert_eq!(wire.len(), 2);
        assert_eq!(wire[0].shape, vec![2, 3]);
        assert_eq!(wire[1].data.len(), 12);
        assert_eq!(layout.from_wire(&wire), Ok(values));
    }

    #[test]
    fn rejects_every_kind_of_malformed_model() {
        let layout = layout();
        let good = layout.to_wire(&[0.0; 9]);

        let mut wire = good.clone();
        wire.pop();
        assert!(matches!(
            layout.from_wire(&wire),
            Err(ModelError::TensorCount { .. })
        ));

        let mut wire = good.clone();
        wire[0].name = "x".into();
        assert!(matches!(
            layout.from_wire(&wire),
            Err(ModelError::Name { .. })
        ));

        let mut wire = good.clone();
        wire[0].shape = vec![3, 2];
        assert!(matches!(
            layout.from_wire(&wire),
            Err(ModelError::Shape { .. })
        ));

        let mut wire = good.clone();
        wire[1].data.truncate(11);
        assert!(matches!(
            layout.from_wire(&wire),
            Err(ModelError::ByteLength { .. })
        ));

        let mut wire = good;
        wire[1].data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(
            layout.from_wire(&wire),
            Err(ModelError::NonFinite {
                name: "b".into(),
                index: 1
            })
        );
    }

    #[test]
    fn axpy_mixes_models() {
        let a = [1.0f32, 2.0];
        let b = [3.0f32, -2.0];
        let mut out = [0.0f32; 2];
        axpy(&mut out, 0.25, &a);
        axpy(&mut out, 0.75, &b);
        // 0.25 * 1 + 0.75 * 3 = 2.5; 0.25 * 2 + 0.75 * -2 = -1.0
        assert_eq!(out, [2.5, -1.0]);
        assert_eq!(squared_distance(&a, &b), 4.0 + 16.0);
    }
}
