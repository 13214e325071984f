//! Image-encoder features kept between runs, so that re-running after correcting one slice, or adding a
//! class, does not encode the volume again (the encoder is about half of a tracked slice's time).
//!
//! Entries are keyed by the 8-bit RGB slice the model sees (a 64-bit hash of its size and pixels) and the
//! model's input size; a cache belongs to one loaded model (the page makes a new one with each model), so
//! features of other weights are never returned. A new intensity window gives other pixels, hence other keys.
//!
//! The budget is in bytes of feature tensors (4 MiB per slice at 512 px, 16 MiB at 1024), on the model's
//! device. A propagation visits the whole volume in a fixed order, which defeats a plain least-recently-used
//! policy once the volume is larger than the budget (every entry is evicted just before it would be used);
//! so an entry is only evicted for one that an older run left, and when every entry was used by the current
//! run a new one is simply not kept. A volume larger than the budget thus keeps its first slices cached.
//! Features encoded ahead by the page's helpers ([`FeatureCache::insert_ahead`]) are for the slices the run
//! reaches next: they replace the least recently used entries, the run's passed slices included.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use image::RgbImage;

use crate::sam2::Sam2Base;
use crate::sam2::sam2_base::ImageFeatures;

/// The budget `memseg` uses: 64 slices at 512 px, 16 at 1024 (the page keeps less: `web::PAGE_FEATURE_CACHE_BYTES`).
pub const DEFAULT_BUDGET_BYTES: usize = 256 << 20;

/// A cache shared by the runs of one model (the browser worker and the CLI are single-threaded per run).
pub type SharedFeatureCache = Rc<RefCell<FeatureCache>>;

/// A slice as the encoder sees it: its 8-bit RGB pixels (hashed with their size) and the model's input size.
/// As text `"{pixels:016x}@{image_size}"`: the page's encoder workers compute it where they encode (the same
/// build hashes the same way) and hand it over with the features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pixels: u64,
    image_size: usize,
}

impl Key {
    pub fn of(image: &RgbImage, image_size: usize) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        image.dimensions().hash(&mut hasher);
        image.as_raw().hash(&mut hasher);
        Self { pixels: hasher.finish(), image_size }
    }

    pub fn image_size(&self) -> usize {
        self.image_size
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}@{}", self.pixels, self.image_size)
    }
}

impl std::str::FromStr for Key {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a feature-cache key");
        let (pixels, size) = s.split_once('@').ok_or_else(bad)?;
        Ok(Self { pixels: u64::from_str_radix(pixels, 16).map_err(|_| bad())?, image_size: size.parse().map_err(|_| bad())? })
    }
}

struct Entry {
    features: ImageFeatures,
    bytes: usize,
    /// The last run that used it.
    run: u64,
    /// When it was last used or kept (a counter of cache operations).
    used_at: u64,
}

/// What the cache holds and has done (the tests read it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub budget_bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

pub struct FeatureCache {
    budget: usize,
    used: usize,
    run: u64,
    clock: u64,
    entries: HashMap<Key, Entry>,
    hits: u64,
    misses: u64,
}

impl FeatureCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self { budget: budget_bytes, used: 0, run: 0, clock: 0, entries: HashMap::new(), hits: 0, misses: 0 }
    }

    pub fn shared(budget_bytes: usize) -> SharedFeatureCache {
        Rc::new(RefCell::new(Self::new(budget_bytes)))
    }

    /// Marks the start of a run: entries used from now on are protected from eviction until the next run.
    pub fn begin_run(&mut self) {
        self.run += 1;
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { entries: self.entries.len(), bytes: self.used, budget_bytes: self.budget, hits: self.hits, misses: self.misses }
    }

    fn get(&mut self, key: &Key) -> Option<ImageFeatures> {
        let (run, now) = (self.run, self.tick());
        let found = self.entries.get_mut(key).map(|e| {
            (e.run, e.used_at) = (run, now);
            e.features.clone()
        });
        if found.is_some() { self.hits += 1 } else { self.misses += 1 }
        found
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    /// Keeps `features` under `key` if the budget allows (see the module's policy) and says whether it did; a
    /// key already held stays as it is.
    pub fn insert(&mut self, key: Key, features: &ImageFeatures) -> bool {
        // The entry the oldest run used, never one this run used.
        let run = self.run;
        self.insert_with(key, features, |e| (e.run < run).then_some(e.run))
    }

    /// Keeps features encoded ahead for a slice the current run is about to reach (the page's encoder helpers),
    /// making room from the least recently used entries, this run's included: in a volume larger than the
    /// budget, the slices the run has passed give way to the ones it reaches next.
    pub fn insert_ahead(&mut self, key: Key, features: &ImageFeatures) -> bool {
        self.insert_with(key, features, |e| Some(e.used_at))
    }

    /// `insert` with `rank` choosing the victims: the evictable entry of lowest rank goes first.
    fn insert_with(&mut self, key: Key, features: &ImageFeatures, rank: impl Fn(&Entry) -> Option<u64>) -> bool {
        if self.entries.contains_key(&key) {
            return false;
        }
        let bytes = features.backbone_fpn.iter().map(|t| t.shape().num_elements() * 4).sum::<usize>();
        if bytes > self.budget {
            return false;
        }
        while self.used + bytes > self.budget {
            let victim = self.entries.iter().filter_map(|(k, e)| rank(e).map(|r| (r, *k))).min_by_key(|(r, _)| *r).map(|(_, k)| k);
            match victim.and_then(|k| self.entries.remove(&k)) {
                Some(e) => self.used -= e.bytes,
                None => return false,
            }
        }
        self.used += bytes;
        let (run, used_at) = (self.run, self.tick());
        self.entries.insert(key, Entry { features: features.clone(), bytes, run, used_at });
        true
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

/// `model.forward_image` of an 8-bit RGB slice, through `cache` when there is one. Also says whether the
/// encoder ran (the reports count encoder runs).
pub fn encode(model: &Sam2Base, cache: Option<&SharedFeatureCache>, image: &RgbImage) -> (ImageFeatures, bool) {
    let Some(cache) = cache else {
        return (model.forward_image(super::preprocess(model, image)), true);
    };
    let key = Key::of(image, model.image_size());
    if let Some(features) = cache.borrow_mut().get(&key) {
        return (features, false);
    }
    let features = model.forward_image(super::preprocess(model, image));
    cache.borrow_mut().insert(key, &features);
    (features, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Tensor};

    fn features(elements: usize) -> ImageFeatures {
        ImageFeatures { backbone_fpn: vec![Tensor::zeros([1, 1, 1, elements], &Device::flex())] }
    }

    fn key(i: u64) -> Key {
        Key { pixels: i, image_size: 512 }
    }

    #[test]
    fn a_scan_larger_than_the_budget_keeps_its_first_entries() {
        // Room for 3 entries of 100 floats; a run visits 5 keys twice.
        let mut cache = FeatureCache::new(3 * 400);
        for _ in 0..2 {
            cache.begin_run();
            for i in 0..5 {
                if cache.get(&key(i)).is_none() {
                    cache.insert(key(i), &features(100));
                }
            }
        }
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (3, 1200));
        assert_eq!((stats.hits, stats.misses), (3, 7), "the second run finds the 3 kept slices");
    }

    #[test]
    fn entries_of_an_older_run_make_room_for_the_current_one() {
        let mut cache = FeatureCache::new(2 * 400);
        cache.begin_run();
        cache.insert(key(1), &features(100));
        cache.insert(key(2), &features(100));
        cache.begin_run();
        assert!(cache.get(&key(2)).is_some());
        cache.insert(key(3), &features(100));
        assert!(cache.get(&key(1)).is_none(), "key 1 (last used by the old run) was evicted");
        assert!(cache.get(&key(2)).is_some() && cache.get(&key(3)).is_some());
        cache.insert(key(4), &features(100));
        assert!(cache.get(&key(4)).is_none(), "both entries belong to this run: the new one is not kept");
        cache.insert(key(5), &features(1000));
        assert_eq!(cache.stats().entries, 2, "an entry larger than the budget is never kept");
        assert!(!cache.insert(key(2), &features(100)));
        assert_eq!(cache.stats().bytes, 800, "a key already held is not counted twice");
        assert!(cache.contains(&key(2)) && !cache.contains(&key(4)));
    }

    #[test]
    fn features_encoded_ahead_replace_what_the_run_used_longest_ago() {
        let mut cache = FeatureCache::new(2 * 400);
        cache.begin_run();
        cache.insert(key(1), &features(100));
        cache.insert(key(2), &features(100));
        assert!(cache.get(&key(1)).is_some(), "key 1 used again: key 2 is now the least recently used");
        assert!(!cache.insert(key(3), &features(100)), "the run's own misses never evict this run's entries");
        assert!(cache.insert_ahead(key(3), &features(100)));
        assert!(cache.contains(&key(1)) && !cache.contains(&key(2)) && cache.contains(&key(3)));
    }

    #[test]
    fn the_key_is_the_pixels_and_the_input_size() {
        let a = RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]));
        let mut b = a.clone();
        assert_eq!(Key::of(&a, 512), Key::of(&b, 512));
        assert_ne!(Key::of(&a, 512), Key::of(&a, 1024));
        b.put_pixel(3, 3, image::Rgb([1, 2, 4]));
        assert_ne!(Key::of(&a, 512), Key::of(&b, 512));
        assert_ne!(Key::of(&RgbImage::new(2, 8), 512), Key::of(&RgbImage::new(8, 2), 512));
        let text = Key::of(&a, 512).to_string();
        assert_eq!(text.parse::<Key>(), Ok(Key::of(&a, 512)), "{text}");
        assert!("12@x".parse::<Key>().is_err() && "nokey".parse::<Key>().is_err());
    }
}
