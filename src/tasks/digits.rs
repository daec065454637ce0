//! The `digits` task: digit classification on IDX files (MNIST family) with the paper's CNN
//! (appendix B.3, table 1).
//!
//! The data folder holds the four standard files, plain or gzip-compressed:
//! `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
//! `t10k-labels-idx1-ubyte` (each possibly ending in `.gz`). A node draws its own training
//! images from the training files and its held-out images from the t10k files, seeded by the
//! node. Its shard may name another folder, so that two groups of nodes learn from different
//! data sets, and may transform the data: `invert-permute` inverts the pixels and relabels the
//! classes by a fixed permutation, which makes a truly different task of the same images.
//!
//! ```toml
//! shard = { data = "/usr/share/datasets/fashion-mnist", transform = "invert-permute",
//!           train_images = 500, test_images = 400, data_fraction = 0.25 }
//! ```
//!
//! A node has less data in one of two ways: fewer training images (`train_images`, which it
//! then sees more often and may overfit), or a `data_fraction` of the rounds in which it learns
//! from its batch at all, as in the authors' experiments.
//!
//! Decoded files are shared by the nodes of one process while any of them holds them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;
use rand::rngs::SmallRng;
use serde::Deserialize;

use super::classify::{self, Classifier, Examples, Model, SharedData, StepTimings};
use super::cnn::{self, Cnn};
use super::{BatchMetrics, Task, TaskContext, TaskError, TaskKind, TestMetrics};
use crate::params::Layout;
use crate::seed::{self, Stream};

/// The relabelling of `invert-permute`: class `c` becomes `PERMUTATION[c]` (no class keeps
/// its label).
pub const PERMUTATION: [u8; 10] = [3, 8, 0, 6, 1, 9, 4, 2, 7, 5];

/// The magic number of an IDX file of unsigned bytes with three dimensions (images).
const IMAGES_MAGIC: u32 = 0x0000_0803;

/// The magic number of an IDX file of unsigned bytes with one dimension (labels).
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The range the number of training images is drawn from when the shard does not set it.
const DEFAULT_TRAIN_IMAGES: std::ops::RangeInclusive<usize> = 200..=2000;

/// How a node's data is changed before use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transform {
    /// The images and labels as they are.
    #[default]
    None,
    /// Pixels inverted (`255 - p`) and labels permuted by [`PERMUTATION`].
    InvertPermute,
}

/// A node's shard of the `digits` task.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigitsShard {
    /// The data folder, when it is not the task settings' `data`.
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// How the node's images and labels are changed.
    #[serde(default)]
    pub transform: Transform,
    /// Training images the node draws; by default a number drawn from 200 to 2000 with the
    /// node's seed, as in the paper.
    #[serde(default)]
    pub train_images: Option<usize>,
    /// Held-out images the node draws.
    #[serde(default = "default_test_images")]
    pub test_images: usize,
    /// Share of rounds in which the node learns from its batch, in (0, 1]: the authors' way
    /// of giving some nodes less data.
    #[serde(default = "classify::every_batch")]
    pub data_fraction: f64,
}

fn default_test_images() -> usize {
    400
}

/// One node's digit classification: its drawn images and the CNN.
pub struct DigitsTask {
    classifier: Classifier<Cnn>,
    /// The decoded files, kept so that nodes set up later in this process reuse them.
    _data: [Arc<DigitSet>; 2],
}

impl DigitsTask {
    /// Reads the node's shard from `ctx`, loads (or reuses) the data set and draws the node's
    /// training and held-out images.
    pub fn new(ctx: &TaskContext) -> Result<Self, TaskError> {
        let shard_error = |reason: String| TaskError::Shard {
            node: ctx.node_id.clone(),
            reason,
        };
        let shard: DigitsShard =
            serde_json::from_value(ctx.shard.clone()).map_err(|e| shard_error(e.to_string()))?;
        let dir = shard
            .data
            .clone()
            .or_else(|| ctx.settings.data.clone())
            .ok_or_else(|| {
                shard_error(
                    "digits needs a data folder: set `data` in the task or the shard".into(),
                )
            })?;

        // Decide how many images to draw, then draw them.
        let train_set = load_shared(&dir, "train")?;
        let test_set = load_shared(&dir, "t10k")?;
        let mut rng = seed::rng(ctx.seed, Stream::Task, &[classify::SHARD_STREAM]);
        let train_images = match shard.train_images {
            Some(n) => n,
            None => rng.random_range(DEFAULT_TRAIN_IMAGES).min(train_set.len()),
        };
        for (wanted, set, what) in [
            (train_images, &train_set, "training"),
            (shard.test_images, &test_set, "held-out"),
        ] {
            if wanted == 0 || wanted > set.len() {
                return Err(shard_error(format!(
                    "asks for {wanted} {what} images, `{}` holds {}",
                    set.images_path.display(),
                    set.len()
                )));
            }
        }
        let train = train_set.draw(train_images, shard.transform, &mut rng);
        let test = test_set.draw(shard.test_images, shard.transform, &mut rng);
        tracing::debug!(
            node = %ctx.node_id,
            train = train.len(),
            test = test.len(),
            transform = ?shard.transform,
            "digits shard drawn"
        );

        let classifier = Classifier::new(ctx, Cnn::new(), train, test, shard.data_fraction)?;
        Ok(Self {
            classifier,
            _data: [train_set, test_set],
        })
    }

    /// The model layout of every `digits` node (the CNN of table 1), which needs no shard.
    pub fn layout_of() -> Arc<Layout> {
        Cnn::new().layout().clone()
    }

    /// The node's training images (pixels scaled to [0, 1]) and labels.
    pub fn train_examples(&self) -> &Examples {
        self.classifier.train_examples()
    }

    /// The node's held-out images and labels.
    pub fn test_examples(&self) -> &Examples {
        self.classifier.test_examples()
    }

    /// Where the time of the last local step went.
    pub fn timings(&self) -> StepTimings {
        self.classifier.timings()
    }
}

impl Task for DigitsTask {
    fn kind(&self) -> TaskKind {
        TaskKind::Digits
    }

    fn layout(&self) -> &Arc<Layout> {
        self.classifier.model().layout()
    }

    fn init(&mut self) -> Vec<f32> {
        self.classifier.init()
    }

    fn next_batch(&mut self, round: u64) -> Result<(), TaskError> {
        self.classifier.next_batch(round)
    }

    fn adapt(&mut self, model: &[f32], adapted: &mut [f32]) -> Result<BatchMetrics, TaskError> {
        self.classifier.adapt(model, adapted)
    }

    fn losses(&mut self, models: &[&[f32]], out: &mut [f64]) -> Result<(), TaskError> {
        self.classifier.losses(models, out)
    }

    fn round_metrics(
        &mut self,
        adapt: BatchMetrics,
        _combined: &[f32],
    ) -> Result<BatchMetrics, TaskError> {
        Ok(adapt)
    }

    fn flip_labels(&mut self) -> bool {
        self.classifier.flip_labels();
        true
    }

    fn test(&mut self, round: u64, model: &[f32]) -> Result<Option<TestMetrics>, TaskError> {
        self.classifier.test(round, model)
    }
}

/// One part (`train` or `t10k`) of an IDX data set, decoded.
#[derive(Debug)]
pub struct DigitSet {
    /// The images file, for messages.
    pub images_path: PathBuf,
    /// Pixels, 784 per image, row-major.
    pub pixels: Vec<u8>,
    /// One label per image, each below 10.
    pub labels: Vec<u8>,
}

impl DigitSet {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `count` distinct images drawn with `rng`, transformed and scaled to [0, 1].
    fn draw(&self, count: usize, transform: Transform, rng: &mut SmallRng) -> Examples {
        let mut examples = Examples::new(cnn::PIXELS);
        let mut row = vec![0.0f32; cnn::PIXELS];
        for i in rand::seq::index::sample(rng, self.len(), count) {
            let pixels = &self.pixels[i * cnn::PIXELS..(i + 1) * cnn::PIXELS];
            let label = self.labels[i];
            let label = match transform {
                Transform::None => label,
                Transform::InvertPermute => PERMUTATION[usize::from(label)],
            };
            for (r, &p) in row.iter_mut().zip(pixels) {
                let p = match transform {
                    Transform::None => p,
                    Transform::InvertPermute => 255 - p,
                };
                *r = f32::from(p) / 255.0;
            }
            examples.push(&row, u32::from(label));
        }
        examples
    }
}

static LOADED: SharedData<DigitSet> = SharedData::new();

/// The part `prefix` (`train` or `t10k`) of the data set in `dir`, decoded once per process.
fn load_shared(dir: &Path, prefix: &str) -> Result<Arc<DigitSet>, TaskError> {
    let key = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .join(prefix);
    LOADED.get_or_load(&key, || load(dir, prefix))
}

/// Reads and checks the images and labels of the part `prefix` of the data set in `dir`.
pub fn load(dir: &Path, prefix: &str) -> Result<DigitSet, TaskError> {
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (count, pixels) = parse_images(&images_path, &read(&images_path)?)?;
    let labels = parse_labels(&labels_path, &read(&labels_path)?)?;
    if labels.len() != count {
        return Err(data_error(
            &labels_path,
            format!(
                "holds {} labels but `{}` holds {count} images",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    Ok(DigitSet {
        images_path,
        pixels,
        labels,
    })
}

/// The file `name` in `dir`, or its gzip-compressed form `name.gz`.
fn find(dir: &Path, name: &str) -> Result<PathBuf, TaskError> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(data_error(
        &plain,
        "not found, with or without `.gz`".into(),
    ))
}

/// The bytes of an IDX file, decompressed if it is gzip (told by its first two bytes).
fn read(path: &Path) -> Result<Vec<u8>, TaskError> {
    let raw = std::fs::read(path).map_err(|e| data_error(path, format!("cannot read: {e}")))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_end(&mut bytes)
        .map_err(|e| data_error(path, format!("cannot decompress: {e}")))?;
    Ok(bytes)
}

/// The header of an IDX file: checks the magic number and returns the dimensions and the data
/// after them.
fn parse_header<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    what: &str,
) -> Result<(Vec<usize>, &'a [u8]), TaskError> {
    let word = |i: usize| -> Option<u32> {
        let b = bytes.get(4 * i..4 * i + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).ok_or_else(|| data_error(path, "too short for an IDX header".into()))?;
    if found != magic {
        return Err(data_error(
            path,
            format!("magic number {found:#010x} is not {magic:#010x} ({what})"),
        ));
    }
    let rank = (magic & 0xff) as usize;
    let dims = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| data_error(path, "too short for an IDX header".into()))?;
    Ok((dims, &bytes[4 * (rank + 1)..]))
}

/// Parses an idx3-ubyte file of 28x28 images: returns their count and pixels.
fn parse_images(path: &Path, bytes: &[u8]) -> Result<(usize, Vec<u8>), TaskError> {
    let (dims, data) = parse_header(path, bytes, IMAGES_MAGIC, "idx3-ubyte images")?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if (rows, cols) != (cnn::SIDE, cnn::SIDE) {
        return Err(data_error(
            path,
            format!("images are {rows}x{cols}, the model takes 28x28"),
        ));
    }
    let expected = count * cnn::PIXELS;
    if data.len() != expected {
        let complete = data.len() / cnn::PIXELS;
        return Err(data_error(
            path,
            format!(
                "header promises {count} images ({expected} bytes) but {} bytes follow \
                 (image {complete} is the first incomplete or extra one)",
                data.len()
            ),
        ));
    }
    Ok((count, data.to_vec()))
}

/// Parses an idx1-ubyte file of labels, each of which must be a class below 10.
fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, TaskError> {
    let (dims, data) = parse_header(path, bytes, LABELS_MAGIC, "idx1-ubyte labels")?;
    if data.len() != dims[0] {
        return Err(data_error(
            path,
            format!(
                "header promises {} labels but {} bytes follow",
                dims[0],
                data.len()
            ),
        ));
    }
    if let Some((record, label)) = data.iter().enumerate().find(|(_, l)| **l >= 10) {
        return Err(data_error(
            path,
            format!("record {record}: label {label} is outside 0..=9"),
        ));
    }
    Ok(data.to_vec())
}

fn data_error(path: &Path, reason: String) -> TaskError {
    TaskError::Data {
        path: path.display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{Optimizer, TaskSettings};
    use std::io::Write;

    /// A fresh folder under the system's temporary directory.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("byzmtl-digits-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// An idx3-ubyte file's bytes for `labels.len()` images: image `i` is a bar whose row is
    /// its label, with a faint noise pattern, so that the classes are easy to learn.
    fn images_bytes(labels: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [IMAGES_MAGIC, labels.len() as u32, 28, 28] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        for (i, &label) in labels.iter().enumerate() {
            for y in 0..28 {
                for x in 0..28 {
                    let bar = y / 2 == usize::from(label) + 2 && (4..24).contains(&x);
                    let noise = ((i * 7 + y * 3 + x * 5) % 23) as u8;
                    bytes.push(if bar { 230 } else { noise });
                }
            }
        }
        bytes
    }

    fn labels_bytes(labels: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [LABELS_MAGIC, labels.len() as u32] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        bytes.extend_from_slice(labels);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// Writes a data set of `train` and `test` images, the training files gzip-compressed and
    /// the test files plain, so both forms are read.
    fn write_set(dir: &Path, train: usize, test: usize) {
        let train_labels: Vec<u8> = (0..train).map(|i| (i % 10) as u8).collect();
        let test_labels: Vec<u8> = (0..test).map(|i| ((i * 3) % 10) as u8).collect();
        let files = [
            (
                "train-images-idx3-ubyte.gz",
                gzip(&images_bytes(&train_labels)),
            ),
            (
                "train-labels-idx1-ubyte.gz",
                gzip(&labels_bytes(&train_labels)),
            ),
            ("t10k-images-idx3-ubyte", images_bytes(&test_labels)),
            ("t10k-labels-idx1-ubyte", labels_bytes(&test_labels)),
        ];
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    fn context(dir: &Path, shard: serde_json::Value) -> TaskContext {
        TaskContext {
            node_id: "node-3".into(),
            node_index: 3,
            seed: 42,
            network_seed: 42,
            step_size: 3e-3,
            rounds: 20,
            position: None,
            settings: TaskSettings {
                kind: TaskKind::Digits,
                batch_size: 16,
                optimizer: Optimizer::Adam,
                test_every: 10,
                data: Some(dir.to_path_buf()),
                init: None,
            },
            shard,
        }
    }

    #[test]
    fn loads_plain_and_gzip_files_and_draws_the_shard() {
        let dir = temp_dir("load");
        write_set(&dir, 60, 30);
        let shard = serde_json::json!({ "train_images": 50, "test_images": 20 });
        let task = DigitsTask::new(&context(&dir, shard.clone())).unwrap();
        assert_eq!(task.train_examples().len(), 50);
        assert_eq!(task.test_examples().len(), 20);
        assert_eq!(task.layout().len(), 130_890);
        assert_eq!(&DigitsTask::layout_of(), task.layout());

        // The same seed draws the same images; a test label is (3 i) mod 10 of its index.
        let again = DigitsTask::new(&context(&dir, shard)).unwrap();
        assert_eq!(again.train_examples(), task.train_examples());
        assert!(
            Arc::ptr_eq(&again._data[0], &task._data[0]),
            "decoded once per process"
        );
        let set = load(&dir, "t10k").unwrap();
        assert_eq!(set.len(), 30);
        assert_eq!(set.labels[7], 1);
        assert_eq!(set.pixels.len(), 30 * 784);

        // By default the training count is drawn from 200..=2000, capped by the file.
        let task = DigitsTask::new(&context(&dir, serde_json::json!({ "test_images": 30 })));
        assert_eq!(task.unwrap().train_examples().len(), 60);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invert_permute_changes_pixels_and_labels() {
        let dir = temp_dir("transform");
        write_set(&dir, 20, 10);
        let plain = serde_json::json!({ "train_images": 20, "test_images": 10 });
        let other = serde_json::json!({
            "train_images": 20, "test_images": 10, "transform": "invert-permute"
        });
        let a = DigitsTask::new(&context(&dir, plain)).unwrap();
        let b = DigitsTask::new(&context(&dir, other)).unwrap();
        let (a, b) = (a.train_examples(), b.train_examples());
        for i in 0..a.len() {
            assert_eq!(b.labels[i], u32::from(PERMUTATION[a.labels[i] as usize]));
            assert!(
                a.row(i)
                    .iter()
                    .zip(b.row(i))
                    .all(|(x, y)| (x + y - 1.0).abs() < 1e-6)
            );
        }
        let mut sorted = PERMUTATION;
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(
            PERMUTATION
                .iter()
                .enumerate()
                .all(|(c, &p)| usize::from(p) != c)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn training_steps_lower_the_loss() {
        let dir = temp_dir("train");
        write_set(&dir, 200, 40);
        let shard = serde_json::json!({ "train_images": 200, "test_images": 40 });
        let mut task = DigitsTask::new(&context(&dir, shard)).unwrap();
        let mut model = task.init();
        let mut adapted = vec![0.0; model.len()];

        let mut first = None;
        let mut tests = Vec::new();
        for round in 0..20 {
            task.next_batch(round).unwrap();
            let metrics = task.adapt(&model, &mut adapted).unwrap();
            first.get_or_insert(metrics.loss);
            std::mem::swap(&mut model, &mut adapted);
            tests.extend(task.test(round, &model).unwrap());
        }
        let rounds: Vec<u64> = tests.iter().map(|t| t.round).collect();
        assert_eq!(rounds, vec![9, 19]);
        let last = tests[1];
        // Ten classes start near ln 10 = 2.30; the bars are learned within two epochs.
        assert!(first.unwrap() > 2.0, "{first:?}");
        assert!(last.loss < 1.0, "{last:?}");
        assert!(last.accuracy > 0.8, "{last:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scores_several_models_on_the_batch() {
        let dir = temp_dir("scores");
        write_set(&dir, 30, 10);
        let shard = serde_json::json!({ "train_images": 30, "test_images": 10 });
        let mut task = DigitsTask::new(&context(&dir, shard)).unwrap();
        let model = task.init();
        let zeros = vec![0.0; model.len()];
        let mut wild = model.clone();
        wild[0] = f32::MAX;
        wild[1] = -f32::MAX;
        task.next_batch(0).unwrap();
        let mut out = [0.0; 3];
        task.losses(&[&model, &zeros, &wild], &mut out).unwrap();
        let mut adapted = zeros.clone();
        let own = task.adapt(&model, &mut adapted).unwrap();
        assert!((out[0] - own.loss).abs() < 1e-9);
        // An all-zero model gives equal logits: loss ln 10.
        assert!((out[1] - 10f64.ln()).abs() < 1e-6);
        assert!(out[2].is_nan() || out[2] > out[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn expect_data_error(dir: &Path, file: &str, needle: &str) {
        let err = DigitsTask::new(&context(dir, serde_json::json!({})))
            .err()
            .expect("the data set must be rejected");
        let message = err.to_string();
        assert!(matches!(err, TaskError::Data { .. }), "{message}");
        assert!(message.contains(file), "{message}");
        assert!(message.contains(needle), "{message}");
    }

    #[test]
    fn bad_files_are_reported_with_their_name() {
        let dir = temp_dir("bad");

        // A missing file.
        write_set(&dir, 10, 10);
        std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
        expect_data_error(&dir, "t10k-labels-idx1-ubyte", "not found");

        // A wrong magic number: labels where images are expected.
        write_set(&dir, 10, 10);
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), labels_bytes(&[1, 2])).unwrap();
        expect_data_error(&dir, "t10k-images-idx3-ubyte", "magic number 0x00000801");

        // A truncated image file, and a truncated gzip stream.
        write_set(&dir, 10, 10);
        let mut bytes = images_bytes(&[0; 10]);
        bytes.truncate(16 + 784 * 9 + 100);
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), bytes).unwrap();
        expect_data_error(&dir, "t10k-images-idx3-ubyte", "image 9");
        write_set(&dir, 10, 10);
        let mut bytes = gzip(&images_bytes(&[0; 10]));
        bytes.truncate(bytes.len() / 2);
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), bytes).unwrap();
        expect_data_error(&dir, "train-images-idx3-ubyte.gz", "cannot decompress");

        // A header cut short.
        write_set(&dir, 10, 10);
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), [0, 0, 8, 1, 0]).unwrap();
        expect_data_error(&dir, "t10k-labels-idx1-ubyte", "too short");

        // A label outside the classes.
        write_set(&dir, 10, 10);
        std::fs::write(
            dir.join("t10k-labels-idx1-ubyte"),
            labels_bytes(&[1, 2, 12, 0, 0, 0, 0, 0, 0, 0]),
        )
        .unwrap();
        expect_data_error(&dir, "t10k-labels-idx1-ubyte", "record 2: label 12");

        // Images and labels that do not pair up.
        write_set(&dir, 10, 10);
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), labels_bytes(&[1; 9])).unwrap();
        expect_data_error(&dir, "t10k-labels-idx1-ubyte", "holds 9 labels");

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_shards_are_reported_with_the_node() {
        let dir = temp_dir("shard");
        write_set(&dir, 10, 10);
        for shard in [
            serde_json::json!({ "train_images": 10, "colour": true }),
            serde_json::json!({ "train_images": 11, "test_images": 10 }),
            serde_json::json!({ "transform": "rotate" }),
            serde_json::json!({ "test_images": 0 }),
        ] {
            let err = DigitsTask::new(&context(&dir, shard))
                .err()
                .expect("rejected");
            assert!(matches!(err, TaskError::Shard { .. }), "{err}");
            assert!(err.to_string().contains("node-3"), "{err}");
        }
        let mut ctx = context(&dir, serde_json::json!({}));
        ctx.settings.data = None;
        assert!(matches!(
            DigitsTask::new(&ctx),
            Err(TaskError::Shard { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
