//! The paper's digit classifier (table 1) as a candle model, with convolution and max-pooling
//! operations whose gradients are right on the CPU.
//!
//! Three 3x3 convolutions with padding 1 and 32, 64 and 64 channels, each followed by ReLU and
//! a 2x2 max-pool (28 -> 14 -> 7 -> 3, the last pool dropping the odd row and column as
//! PyTorch does), then 576 -> 128 -> ReLU -> 10. The parameters keep PyTorch's names, shapes
//! and flattening order (`conv1.weight` is `[32, 1, 3, 3]`, `fc1` reads channel-major).
//!
//! Candle's own `max_pool2d` is not used: its CPU backward in candle 0.11 scales a window's
//! gradient by the share of maxima in it (a quarter for a unique maximum in 2x2), and when the
//! size is not a multiple of the window (7 -> 3) it matches inputs against the wrong windows,
//! so gradients are lost. The pools here route each window's gradient whole to its first
//! maximum. Candle's `conv2d` is not used either: its CPU
//! backward goes through a slow transposed convolution.
//!
//! Instead, activations stay channels-last (`[batch, height, width, channels]`) and each layer
//! is two custom operations. A convolution is an im2col copy and one matrix product through
//! candle's matmul; its backward recomputes the columns rather than keep them in the autograd
//! graph. Max-pool, bias and ReLU are one step, `relu(pool(y) + bias)`, which equals the usual
//! `pool(relu(y + bias))` in values and gradients (a channel's bias shifts the whole window and
//! ReLU is monotone) on a quarter of the elements. The kernels are single-threaded; only the
//! matrix products use both cores.

use std::ops::AddAssign;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Device, Error, Layout as TensorLayout};
use candle_core::{Result, Shape, Tensor};
use rand::Rng;
use rand::rngs::SmallRng;

use super::classify::Model;
use crate::params::{Layout, TensorSpec};

/// Image side the model takes.
pub const SIDE: usize = 28;

/// Number of classes.
pub const CLASSES: usize = 10;

/// Values in one image.
pub const PIXELS: usize = SIDE * SIDE;

/// Channels of the three convolutions.
const CHANNELS: [usize; 3] = [32, 64, 64];

/// Width of the hidden fully connected layer.
const HIDDEN: usize = 128;

/// Values after the last pool: 64 channels of 3x3.
const FLAT: usize = 64 * 3 * 3;

/// The CNN of table 1.
#[derive(Debug, Clone)]
pub struct Cnn {
    layout: Arc<Layout>,
}

impl Cnn {
    /// The model with its layout.
    pub fn new() -> Self {
        let [c1, c2, c3] = CHANNELS;
        let layout = Layout::new(vec![
            TensorSpec::new("conv1.weight", &[c1, 1, 3, 3]),
            TensorSpec::new("conv1.bias", &[c1]),
            TensorSpec::new("conv2.weight", &[c2, c1, 3, 3]),
            TensorSpec::new("conv2.bias", &[c2]),
            TensorSpec::new("conv3.weight", &[c3, c2, 3, 3]),
            TensorSpec::new("conv3.bias", &[c3]),
            TensorSpec::new("fc1.weight", &[HIDDEN, FLAT]),
            TensorSpec::new("fc1.bias", &[HIDDEN]),
            TensorSpec::new("fc2.weight", &[CLASSES, HIDDEN]),
            TensorSpec::new("fc2.bias", &[CLASSES]),
        ]);
        Self { layout }
    }
}

impl Default for Cnn {
    fn default() -> Self {
        Self::new()
    }
}

impl Model for Cnn {
    fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    fn classes(&self) -> usize {
        CLASSES
    }

    /// PyTorch's default initialization: every weight and bias uniform in
    /// `±1/sqrt(fan_in)` of its layer.
    fn init(&self, rng: &mut SmallRng) -> Vec<f32> {
        let mut values = Vec::with_capacity(self.layout.len());
        let mut bound = 1.0;
        for spec in self.layout.tensors() {
            // A weight sets the bound for itself and the bias that follows it.
            if spec.shape.len() > 1 {
                let fan_in: usize = spec.shape[1..].iter().product();
                bound = 1.0 / (fan_in as f32).sqrt();
            }
            values.extend((0..spec.numel()).map(|_| rng.random_range(-bound..bound)));
        }
        values
    }

    /// The first convolution's im2col columns, `[rows * 784, 9]`: the same for every model
    /// scored on the batch, so they are made once.
    fn input(&self, features: Vec<f32>, rows: usize) -> Result<Tensor> {
        let images = Tensor::from_vec(features, (rows, SIDE, SIDE, 1), &Device::Cpu)?;
        im2col_3x3(&images)
    }

    fn forward(&self, params: &[Tensor], input: &Tensor) -> Result<Tensor> {
        let [w1, b1, w2, b2, w3, b3, fw1, fb1, fw2, fb2] = params else {
            return Err(Error::Msg(format!(
                "cnn takes 10 tensors, got {}",
                params.len()
            )));
        };
        let batch = input.dim(0)? / PIXELS;

        // 28x28x1 -> 14x14x32 -> 7x7x64 -> 3x3x64. The first convolution starts from the
        // batch's columns, the others from the images of the layer before.
        let x = input.apply_op2(&kernel_rows(w1)?, ColumnsConv)?;
        let x = conv_output_pool(&x, b1, (batch, SIDE, SIDE, CHANNELS[0]))?;
        let x = x.apply_op2(&kernel_rows(w2)?, Conv3x3)?;
        let x = conv_output_pool(&x, b2, (batch, SIDE / 2, SIDE / 2, CHANNELS[1]))?;
        let x = x.apply_op2(&kernel_rows(w3)?, Conv3x3)?;
        let x = conv_output_pool(&x, b3, (batch, SIDE / 4, SIDE / 4, CHANNELS[2]))?;

        // Flatten channel-major, as PyTorch does, then the two linear layers.
        let x = x.permute((0, 3, 1, 2))?.reshape((batch, FLAT))?;
        let x = x.matmul(&fw1.t()?)?.broadcast_add(fb1)?.relu()?;
        x.matmul(&fw2.t()?)?.broadcast_add(fb2)
    }
}

/// A convolution weight `[out, in, 3, 3]` as rows `[out, 9 * in]` in im2col's column order
/// (kernel row, kernel column, channel).
fn kernel_rows(weight: &Tensor) -> Result<Tensor> {
    let (out_c, in_c, _, _) = weight.dims4()?;
    weight.permute((0, 2, 3, 1))?.reshape((out_c, 9 * in_c))
}

/// [`max_pool_bias_relu`] on a convolution's output `[b * h * w, c]` read as images of `dims`,
/// without a reshape that autograd would have to undo.
fn conv_output_pool(
    x: &Tensor,
    bias: &Tensor,
    dims: (usize, usize, usize, usize),
) -> Result<Tensor> {
    x.apply_op2(bias, PoolBiasRelu { dims })
}

/// The im2col columns of a 3x3 convolution with padding 1 and stride 1 over channels-last
/// images `[b, h, w, c]`: a `[b * h * w, 9 * c]` tensor whose row for each output pixel holds
/// its 3x3 neighbourhood (zero outside the image), ordered by kernel row, kernel column,
/// channel. Its gradient sums each column back onto the pixel it was copied from.
pub fn im2col_3x3(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(Im2Col3x3)
}

/// 2x2 max-pool with stride 2 over channels-last images `[b, h, w, c]`, giving
/// `[b, h / 2, w / 2, c]` (an odd last row or column is dropped). Its gradient goes whole to
/// the first maximum of each window, in row-major order.
pub fn max_pool_2x2(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(MaxPool2x2)
}

/// `relu(max_pool_2x2(x) + bias)` over channels-last images `[b, h, w, c]` with a bias of
/// `[c]`, in one step. Adding a channel's bias after the pool instead of before gives the same
/// values and gradients (it shifts the whole window) on a quarter of the elements.
pub fn max_pool_bias_relu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let dims = x.dims4()?;
    x.apply_op2(bias, PoolBiasRelu { dims })
}

// === impl the custom operations ===

/// The element types the custom operations run in: f32 in the model, f64 in gradient checks.
trait Float: Copy + Default + PartialOrd + AddAssign + 'static {
    fn is_nan(self) -> bool;
}

impl Float for f32 {
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Float for f64 {
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// The contiguous values of a storage with its layout.
fn contiguous<'a, T>(values: &'a [T], layout: &TensorLayout, op: &'static str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&values[start..end]),
        None => Err(Error::RequiresContiguous { op }),
    }
}

/// Runs `f32` or `f64` on a float storage and wraps the result.
macro_rules! on_floats {
    ($storage:expr, $layout:expr, $op:expr, |$x:ident| $body:expr) => {
        match $storage {
            CpuStorage::F32(v) => {
                let $x = contiguous(v, $layout, $op)?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(v) => {
                let $x = contiguous(v, $layout, $op)?;
                CpuStorage::F64($body)
            }
            other => return Err(Error::UnsupportedDTypeForOp(other.dtype(), $op)),
        }
    };
}

/// Runs `f32` or `f64` on two float storages of the same type and wraps the result.
macro_rules! on_float_pair {
    ($a:expr, $la:expr, $b:expr, $lb:expr, $op:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let ($x, $y) = (contiguous(a, $la, $op)?, contiguous(b, $lb, $op)?);
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let ($x, $y) = (contiguous(a, $la, $op)?, contiguous(b, $lb, $op)?);
                CpuStorage::F64($body)
            }
            (other, _) => return Err(Error::UnsupportedDTypeForOp(other.dtype(), $op)),
        }
    };
}

/// A 3x3 convolution with padding 1 of channels-last images `[b, h, w, c]` by kernel rows
/// `[out, 9 * c]` (see [`kernel_rows`]), giving `[b * h * w, out]`: im2col and one matrix
/// product. Its backward recomputes the columns instead of keeping them, so the large column
/// matrix never becomes part of the autograd graph.
struct Conv3x3;

impl CustomOp2 for Conv3x3 {
    fn name(&self) -> &'static str {
        "conv-3x3"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &TensorLayout,
        kernel: &CpuStorage,
        kernel_layout: &TensorLayout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = input_layout.shape().dims4()?;
        let (b, h, w, c) = dims;
        let (out_c, k) = kernel_layout.shape().dims2()?;
        if k != 9 * c {
            return Err(Error::Msg(format!("kernel rows of {k} for {c} channels")));
        }
        let cols = on_floats!(input, input_layout, self.name(), |x| im2col(x, dims));
        let cols_layout = TensorLayout::contiguous((b * h * w, k));
        let out = cols.matmul(
            kernel,
            (1, b * h * w, out_c, k),
            &cols_layout,
            &kernel_layout.transpose(0, 1)?,
        )?;
        Ok((out, Shape::from((b * h * w, out_c))))
    }

    fn bwd(
        &self,
        input: &Tensor,
        kernel: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_kernel = grad
            .t()?
            .matmul(&input.contiguous()?.apply_op1_no_bwd(&Im2Col3x3)?)?;
        let grad_input = if input.track_op() {
            let dims = input.dims4()?;
            let cols = grad.matmul(kernel)?;
            Some(cols.apply_op1_no_bwd(&Col2Im3x3 { dims })?)
        } else {
            None
        };
        Ok((grad_input, Some(grad_kernel)))
    }
}

/// A convolution from ready im2col columns `[n, k]` (the batch's, which need no gradient) by
/// kernel rows `[out, k]`, giving `[n, out]`: one matrix product whose backward yields only the
/// kernel's gradient.
struct ColumnsConv;

impl CustomOp2 for ColumnsConv {
    fn name(&self) -> &'static str {
        "columns-conv"
    }

    fn cpu_fwd(
        &self,
        cols: &CpuStorage,
        cols_layout: &TensorLayout,
        kernel: &CpuStorage,
        kernel_layout: &TensorLayout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, k) = cols_layout.shape().dims2()?;
        let (out_c, kernel_k) = kernel_layout.shape().dims2()?;
        if k != kernel_k {
            return Err(Error::Msg(format!(
                "kernel rows of {kernel_k} for columns of {k}"
            )));
        }
        let out = cols.matmul(
            kernel,
            (1, n, out_c, k),
            cols_layout,
            &kernel_layout.transpose(0, 1)?,
        )?;
        Ok((out, Shape::from((n, out_c))))
    }

    fn bwd(
        &self,
        cols: &Tensor,
        _kernel: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((None, Some(grad.t()?.matmul(cols)?)))
    }
}

struct Im2Col3x3;

impl CustomOp1 for Im2Col3x3 {
    fn name(&self) -> &'static str {
        "im2col-3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &TensorLayout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims4()?;
        let (b, h, w, c) = dims;
        let out = on_floats!(storage, layout, self.name(), |x| im2col(x, dims));
        Ok((out, Shape::from((b * h * w, 9 * c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, h, w, c) = arg.dims4()?;
        let grad = grad
            .contiguous()?
            .apply_op1_no_bwd(&Col2Im3x3 { dims: (b, h, w, c) })?;
        Ok(Some(grad))
    }
}

/// The adjoint of [`Im2Col3x3`]: sums columns back onto images of `dims`.
struct Col2Im3x3 {
    dims: (usize, usize, usize, usize),
}

impl CustomOp1 for Col2Im3x3 {
    fn name(&self) -> &'static str {
        "col2im-3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &TensorLayout) -> Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = self.dims;
        if layout.shape().dims() != [b * h * w, 9 * c] {
            return Err(Error::Msg(format!(
                "col2im got columns {:?}",
                layout.shape()
            )));
        }
        let out = on_floats!(storage, layout, self.name(), |cols| col2im(cols, self.dims));
        Ok((out, Shape::from((b, h, w, c))))
    }
}

struct MaxPool2x2;

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "max-pool-2x2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &TensorLayout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims4()?;
        let (b, h, w, c) = dims;
        let out = on_floats!(storage, layout, self.name(), |x| pool_forward(x, dims));
        Ok((out, Shape::from((b, h / 2, w / 2, c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims4()?;
        let grad = arg
            .contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &MaxPool2x2Backward { dims })?;
        Ok(Some(grad))
    }
}

/// The gradient of a 2x2 max-pool with respect to its input, from the input (read as images of
/// `dims`, whatever its shape) and the output's gradient; it takes the input's shape.
struct MaxPool2x2Backward {
    dims: (usize, usize, usize, usize),
}

impl CustomOp2 for MaxPool2x2Backward {
    fn name(&self) -> &'static str {
        "max-pool-2x2-backward"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &TensorLayout,
        grad: &CpuStorage,
        grad_layout: &TensorLayout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims;
        let (b, h, w, c) = dims;
        if input_layout.shape().elem_count() != b * h * w * c
            || grad_layout.shape().elem_count() != b * (h / 2) * (w / 2) * c
        {
            return Err(Error::Msg(format!(
                "max-pool gradient {:?} for input {:?}",
                grad_layout.shape(),
                input_layout.shape()
            )));
        }
        let out = on_float_pair!(
            input,
            input_layout,
            grad,
            grad_layout,
            self.name(),
            |x, g| pool_backward(x, g, dims)
        );
        Ok((out, input_layout.shape().clone()))
    }
}

/// [`max_pool_bias_relu`] on an input read as images of `dims` (`[b, h, w, c]` or the matrix
/// `[b * h * w, c]`): its backward masks the gradient by the ReLU, sums it over pixels for the
/// bias, and routes it through the max-pool for the input.
struct PoolBiasRelu {
    dims: (usize, usize, usize, usize),
}

impl CustomOp2 for PoolBiasRelu {
    fn name(&self) -> &'static str {
        "max-pool-bias-relu"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &TensorLayout,
        bias: &CpuStorage,
        bias_layout: &TensorLayout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims;
        let (b, h, w, c) = dims;
        if input_layout.shape().elem_count() != b * h * w * c || bias_layout.shape().dims() != [c] {
            return Err(Error::Msg(format!(
                "bias {:?} for input {:?}",
                bias_layout.shape(),
                input_layout.shape()
            )));
        }
        let out = on_float_pair!(
            input,
            input_layout,
            bias,
            bias_layout,
            self.name(),
            |x, b| pool_bias_relu(x, b, dims)
        );
        Ok((out, Shape::from((b, h / 2, w / 2, c))))
    }

    fn bwd(
        &self,
        input: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = res.apply_op2_no_bwd(&grad.contiguous()?, &ReluMask)?;
        let grad_bias = grad.apply_op1_no_bwd(&ChannelSum)?;
        let grad_input = input
            .contiguous()?
            .apply_op2_no_bwd(&grad, &MaxPool2x2Backward { dims: self.dims })?;
        Ok((Some(grad_input), Some(grad_bias)))
    }
}

/// The gradient through a ReLU, from its output and the output's gradient.
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "relu-mask"
    }

    fn cpu_fwd(
        &self,
        res: &CpuStorage,
        res_layout: &TensorLayout,
        grad: &CpuStorage,
        grad_layout: &TensorLayout,
    ) -> Result<(CpuStorage, Shape)> {
        fn mask<T: Float>(res: &[T], grad: &[T]) -> Vec<T> {
            let zero = T::default();
            res.iter()
                .zip(grad)
                .map(|(&r, &g)| if r > zero { g } else { zero })
                .collect()
        }
        if res_layout.shape() != grad_layout.shape() {
            return Err(Error::Msg(format!(
                "relu gradient {:?}",
                grad_layout.shape()
            )));
        }
        let out = on_float_pair!(
            res,
            res_layout,
            grad,
            grad_layout,
            self.name(),
            |r, g| mask(r, g)
        );
        Ok((out, res_layout.shape().clone()))
    }
}

/// Sums a tensor over all dimensions but the last: the gradient of a per-channel bias.
struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &TensorLayout) -> Result<(CpuStorage, Shape)> {
        fn sum<T: Float>(x: &[T], c: usize) -> Vec<T> {
            let mut out = vec![T::default(); c];
            for pixel in x.chunks_exact(c) {
                for (o, &v) in out.iter_mut().zip(pixel) {
                    *o += v;
                }
            }
            out
        }
        let c = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let out = on_floats!(storage, layout, self.name(), |x| sum(x, c));
        Ok((out, Shape::from(c)))
    }
}

// === impl the kernels ===

fn im2col<T: Float>(x: &[T], (b, h, w, c): (usize, usize, usize, usize)) -> Vec<T> {
    // Every value is written once, in order: the pixel's channels or zeros for the padding.
    let mut out = Vec::with_capacity(b * h * w * 9 * c);
    for image in 0..b {
        let base = image * h * w;
        for y in 0..h {
            for xx in 0..w {
                for k in 0..9 {
                    match neighbour(y, xx, k, h, w) {
                        // A single channel (the first layer) is one value, not a copy.
                        Some(pixel) if c == 1 => out.push(x[base + pixel]),
                        Some(pixel) => {
                            let src = (base + pixel) * c;
                            out.extend_from_slice(&x[src..src + c]);
                        }
                        None => out.resize(out.len() + c, T::default()),
                    }
                }
            }
        }
    }
    out
}

fn col2im<T: Float>(cols: &[T], (b, h, w, c): (usize, usize, usize, usize)) -> Vec<T> {
    let mut out = vec![T::default(); b * h * w * c];
    for (p, row) in cols.chunks_exact(9 * c).enumerate() {
        let (image, y, xx) = (p / (h * w), (p / w) % h, p % w);
        let base = image * h * w;
        for (k, part) in row.chunks_exact(c).enumerate() {
            if let Some(pixel) = neighbour(y, xx, k, h, w) {
                let dst = (base + pixel) * c;
                for (o, &v) in out[dst..dst + c].iter_mut().zip(part) {
                    *o += v;
                }
            }
        }
    }
    out
}

/// The input pixel (`row * w + column`) under kernel position `k` (`kh * 3 + kw`) of the
/// output pixel `(y, x)`, or `None` in the padding.
fn neighbour(y: usize, x: usize, k: usize, h: usize, w: usize) -> Option<usize> {
    let (iy, ix) = ((y + k / 3).checked_sub(1)?, (x + k % 3).checked_sub(1)?);
    (iy < h && ix < w).then_some(iy * w + ix)
}

/// Whether `v` takes over from the window's maximum so far: a larger value, or NaN (so that
/// NaN spreads as in PyTorch). Cells are visited in row-major order, so ties keep the first.
fn beats<T: Float>(v: T, best: T) -> bool {
    v > best || v.is_nan()
}

/// The four cells of each 2x2 window, each a slice of `c` channels, with the window's index.
fn windows(
    (b, h, w, c): (usize, usize, usize, usize),
) -> impl Iterator<Item = (usize, [std::ops::Range<usize>; 4])> {
    let (oh, ow) = (h / 2, w / 2);
    (0..b * oh * ow).map(move |o| {
        let (image, oy, ox) = (o / (oh * ow), (o / ow) % oh, o % ow);
        let top = ((image * h + 2 * oy) * w + 2 * ox) * c;
        let bottom = top + w * c;
        (
            o,
            [top, top + c, bottom, bottom + c].map(|start| start..start + c),
        )
    })
}

fn pool_forward<T: Float>(x: &[T], dims: (usize, usize, usize, usize)) -> Vec<T> {
    let (b, h, w, c) = dims;
    let mut out = Vec::with_capacity(b * (h / 2) * (w / 2) * c);
    for (_, [r0, r1, r2, r3]) in windows(dims) {
        let (a, bb, cc, d) = (&x[r0], &x[r1], &x[r2], &x[r3]);
        out.extend((0..c).map(|ch| {
            let mut best = a[ch];
            for v in [bb[ch], cc[ch], d[ch]] {
                if beats(v, best) {
                    best = v;
                }
            }
            best
        }));
    }
    out
}

fn pool_bias_relu<T: Float>(x: &[T], bias: &[T], dims: (usize, usize, usize, usize)) -> Vec<T> {
    let mut out = pool_forward(x, dims);
    for pixel in out.chunks_exact_mut(dims.3) {
        for (v, &b) in pixel.iter_mut().zip(bias) {
            *v += b;
            if *v < T::default() {
                *v = T::default();
            }
        }
    }
    out
}

fn pool_backward<T: Float>(x: &[T], grad: &[T], dims: (usize, usize, usize, usize)) -> Vec<T> {
    let c = dims.3;
    let mut out = vec![T::default(); x.len()];
    for (o, cells) in windows(dims) {
        let grad = &grad[o * c..(o + 1) * c];
        for (ch, &g) in grad.iter().enumerate() {
            let mut best = cells[0].start + ch;
            for cell in &cells[1..] {
                if beats(x[cell.start + ch], x[best]) {
                    best = cell.start + ch;
                }
            }
            out[best] += g;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::classify::tests::check_gradient;
    use candle_core::{DType, Var};

    fn random(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::seed::rng(seed, crate::seed::Stream::Task, &[]);
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// The gradient of `sum(op(x) * r)` with respect to `x`, by candle's autograd through `op`.
    fn autograd(
        x: &[f64],
        dims: (usize, usize, usize, usize),
        r: &Tensor,
        op: fn(&Tensor) -> Result<Tensor>,
    ) -> Vec<f64> {
        let var = Var::from_slice(x, dims, &Device::Cpu).unwrap();
        let grads = op(var.as_tensor())
            .unwrap()
            .mul(r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        grads
            .get(&var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Central differences of `sum(op(x) * r)` in f64, one input value at a time.
    fn finite_differences(
        x: &[f64],
        dims: (usize, usize, usize, usize),
        r: &Tensor,
        op: fn(&Tensor) -> Result<Tensor>,
    ) -> Vec<f64> {
        let f = |x: &[f64]| -> f64 {
            let t = Tensor::from_slice(x, dims, &Device::Cpu).unwrap();
            op(&t)
                .unwrap()
                .mul(r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let eps = 1e-6;
        let mut at = x.to_vec();
        (0..x.len())
            .map(|i| {
                at[i] = x[i] + eps;
                let up = f(&at);
                at[i] = x[i] - eps;
                let down = f(&at);
                at[i] = x[i];
                (up - down) / (2.0 * eps)
            })
            .collect()
    }

    #[test]
    fn max_pool_gradient_matches_finite_differences() {
        // Sizes 4 -> 2 and 7 -> 3 (the odd last row and column get no gradient). Expected
        // values are central differences in f64 (eps 1e-6) of sum(pool(x) * r) with random
        // distinct inputs, so no window has a tie within eps; the pool is piecewise linear and
        // the differences are exact up to rounding.
        for (dims, seed) in [((2, 4, 4, 3), 1), ((2, 7, 7, 3), 2), ((1, 7, 6, 2), 3)] {
            let (b, h, w, c) = dims;
            let x = random(b * h * w * c, seed);
            let r = Tensor::from_vec(
                random(b * (h / 2) * (w / 2) * c, seed + 10),
                (b, h / 2, w / 2, c),
                &Device::Cpu,
            )
            .unwrap();
            let actual = autograd(&x, dims, &r, max_pool_2x2);
            let expected = finite_differences(&x, dims, &r, max_pool_2x2);
            for (a, e) in actual.iter().zip(&expected) {
                assert!((a - e).abs() < 1e-8, "{dims:?}: {a} vs {e}");
            }
            // Each window's gradient is passed whole: the routed values are exactly r.
            let total: f64 = actual.iter().sum();
            let routed: f64 = r.sum_all().unwrap().to_scalar().unwrap();
            assert!((total - routed).abs() < 1e-12);
        }
    }

    #[test]
    fn fused_pool_bias_relu_gradient_matches_finite_differences() {
        // relu(pool(x) + bias) on 7x7 inputs (pool to 3x3), with biases that switch some
        // outputs off. Expected values: central differences in f64 (eps 1e-6) of
        // sum(out * r) with respect to every input value and every bias.
        let dims = (2, 7, 7, 3);
        let x = random(2 * 7 * 7 * 3, 8);
        let bias = [0.3, -0.6, 0.0];
        let r = Tensor::from_vec(random(2 * 3 * 3 * 3, 9), (2, 3, 3, 3), &Device::Cpu).unwrap();
        let f = |x: &[f64], bias: &[f64]| -> f64 {
            let x = Tensor::from_slice(x, dims, &Device::Cpu).unwrap();
            let b = Tensor::from_slice(bias, 3, &Device::Cpu).unwrap();
            let out = max_pool_bias_relu(&x, &b).unwrap();
            out.mul(&r).unwrap().sum_all().unwrap().to_scalar().unwrap()
        };

        let xv = Var::from_slice(&x, dims, &Device::Cpu).unwrap();
        let bv = Var::from_slice(&bias, 3, &Device::Cpu).unwrap();
        let out = max_pool_bias_relu(xv.as_tensor(), bv.as_tensor()).unwrap();
        let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let gx: Vec<f64> = grads
            .get(&xv)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let gb: Vec<f64> = grads.get(&bv).unwrap().to_vec1().unwrap();
        assert!(
            out.flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .contains(&0.0)
        );

        let eps = 1e-6;
        let (mut xp, mut bp) = (x.clone(), bias.to_vec());
        for i in 0..x.len() {
            xp[i] = x[i] + eps;
            let up = f(&xp, &bias);
            xp[i] = x[i] - eps;
            let down = f(&xp, &bias);
            xp[i] = x[i];
            assert!(
                (gx[i] - (up - down) / (2.0 * eps)).abs() < 1e-8,
                "input {i}"
            );
        }
        for i in 0..3 {
            bp[i] = bias[i] + eps;
            let up = f(&x, &bp);
            bp[i] = bias[i] - eps;
            let down = f(&x, &bp);
            bp[i] = bias[i];
            assert!((gb[i] - (up - down) / (2.0 * eps)).abs() < 1e-8, "bias {i}");
        }
    }

    #[test]
    fn max_pool_ties_go_to_the_first_maximum() {
        // One 2x2 window of equal values and one with the maximum twice (cells 1 and 3,
        // row-major): all of the gradient 2.0 goes to cell 0, and to cell 1.
        let x = [5.0f64, 5.0, 5.0, 5.0, 1.0, 3.0, 2.0, 3.0];
        let dims = (2, 2, 2, 1);
        let r = Tensor::from_slice(&[2.0f64, 2.0], (2, 1, 1, 1), &Device::Cpu).unwrap();
        let grad = autograd(&x, dims, &r, max_pool_2x2);
        assert_eq!(grad, vec![2.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
    }

    #[test]
    fn max_pool_and_im2col_forward_match_candle() {
        // Candle's forward passes are right; only its max-pool backward is not.
        let dims = (2, 7, 7, 3);
        let x = Tensor::from_vec(random(2 * 7 * 7 * 3, 4), dims, &Device::Cpu).unwrap();
        let ours = max_pool_2x2(&x).unwrap();
        let theirs = x.permute((0, 3, 1, 2)).unwrap().max_pool2d(2).unwrap();
        let theirs = theirs.permute((0, 2, 3, 1)).unwrap();
        let diff: f64 = (ours - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0);

        // A 3x3 convolution with padding 1 as im2col + matmul equals candle's conv2d.
        let kernel = Tensor::from_vec(random(4 * 3 * 9, 5), (4, 3, 3, 3), &Device::Cpu).unwrap();
        let cols = im2col_3x3(&x).unwrap();
        let k = kernel
            .permute((0, 2, 3, 1))
            .unwrap()
            .reshape((4, 27))
            .unwrap();
        let ours = cols
            .matmul(&k.t().unwrap())
            .unwrap()
            .reshape((2, 7, 7, 4))
            .unwrap();
        let nchw = x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
        let theirs = nchw
            .conv2d(&kernel, 1, 1, 1, 1)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        let diff: f64 = (ours - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-12, "{diff}");
    }

    #[test]
    fn im2col_gradient_is_its_adjoint() {
        // For a linear map A, <A x, y> = <x, A^T y>; the gradient of sum(im2col(x) * y) with
        // respect to x is A^T y, which must match central differences.
        let dims = (1, 4, 5, 2);
        let x = random(40, 6);
        let r = Tensor::from_vec(random(20 * 18, 7), (20, 18), &Device::Cpu).unwrap();
        let actual = autograd(&x, dims, &r, im2col_3x3);
        let expected = finite_differences(&x, dims, &r, im2col_3x3);
        for (a, e) in actual.iter().zip(&expected) {
            assert!((a - e).abs() < 1e-8, "{a} vs {e}");
        }
    }

    /// The CNN's logits through candle's own conv2d and max_pool2d forward passes in the
    /// usual NCHW order, as PyTorch would compute them.
    fn reference_forward(params: &[Tensor], images: &Tensor) -> Tensor {
        let mut x = images.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
        for layer in 0..3 {
            let (w, b) = (&params[2 * layer], &params[2 * layer + 1]);
            let y = x.conv2d(w, 1, 1, 1, 1).unwrap();
            let y = y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap();
            x = y.relu().unwrap().max_pool2d(2).unwrap();
        }
        let x = x.flatten_from(1).unwrap();
        let x = x
            .matmul(&params[6].t().unwrap())
            .unwrap()
            .broadcast_add(&params[7])
            .unwrap();
        let x = x.relu().unwrap();
        x.matmul(&params[8].t().unwrap())
            .unwrap()
            .broadcast_add(&params[9])
            .unwrap()
    }

    fn small_batch() -> (Cnn, Vec<f32>, Vec<f32>, Vec<u32>) {
        let model = Cnn::new();
        let mut rng = crate::seed::rng(11, crate::seed::Stream::Task, &[]);
        let values = model.init(&mut rng);
        let images: Vec<f32> = (0..2 * PIXELS)
            .map(|_| rng.random_range(0.0..1.0))
            .collect();
        (model, values, images, vec![3, 7])
    }

    #[test]
    fn forward_matches_a_plain_candle_forward() {
        let (model, values, images, _) = small_batch();
        let params = crate::tasks::classify::param_tensors(model.layout(), &values).unwrap();
        let ours = model
            .forward(&params, &model.input(images.clone(), 2).unwrap())
            .unwrap();
        let images = Tensor::from_vec(images, (2, SIDE, SIDE, 1), &Device::Cpu).unwrap();
        let theirs = reference_forward(&params, &images);
        let diff: f32 = (ours - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn cnn_gradient_matches_finite_differences() {
        // Expected values: central differences (eps 1e-7) of the mean cross-entropy of two
        // random 28x28 images, computed wholly in f64 with the same forward pass (which
        // `forward_matches_a_plain_candle_forward` ties to candle's conv2d and max_pool2d).
        // Actual values: the f32 gradient the local step uses. Sixteen random coordinates of
        // every parameter tensor, conv weights included.
        let (model, values, images, labels) = small_batch();
        let input = model.input(images, 2).unwrap();
        check_gradient(&model, &values, &input, &labels, 16, 1e-4);
    }

    #[test]
    fn forward_runs_in_f64_too() {
        let (model, values, images, _) = small_batch();
        let values: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        let params: Vec<Tensor> = model
            .layout()
            .ranges()
            .map(|(s, r)| Tensor::from_slice(&values[r], s.shape.as_slice(), &Device::Cpu).unwrap())
            .collect();
        let input = model
            .input(images, 2)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let logits = model.forward(&params, &input).unwrap();
        assert_eq!(logits.dims(), &[2, CLASSES]);
        assert_eq!(logits.dtype(), DType::F64);
    }
}
