//! Incremental detokenization: text is released only once its bytes form whole characters, so a
//! streamed emoji split over several byte tokens never shows as U+FFFD.

use super::Tokenizer;
use crate::error::Result;

/// Turns a growing list of ids into text deltas.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Start of the window re-decoded each step (a few tokens of left context keep spacing right).
    prefix: usize,
    /// Ids already released as text.
    read: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `id` and returns the text it completes (possibly empty).
    pub fn push(&mut self, tk: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = tk.decode(&self.ids[self.prefix..self.read], true)?;
        let after = tk.decode(&self.ids[self.prefix..], true)?;
        if after.len() > before.len()
            && !after.ends_with('\u{FFFD}')
            && after.is_char_boundary(before.len())
        {
            let delta = after[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// Whatever is still held back (an incomplete character at the very end).
    pub fn finish(&mut self, tk: &Tokenizer) -> Result<String> {
        let before = tk.decode(&self.ids[self.prefix..self.read], true)?;
        let after = tk.decode(&self.ids[self.prefix..], true)?;
        self.read = self.ids.len();
        Ok(after.get(before.len()..).unwrap_or_default().to_string())
    }
}
