//! Chat templates: the model's Jinja template (`tokenizer.chat_template`) rendered with
//! minijinja and Python-compatible string methods, the way HF `apply_chat_template` does.

use minijinja::{Environment, Error, ErrorKind, context};
use serde::{Deserialize, Serialize};

use super::Tokenizer;
use crate::error::{EngineError, Result};

/// One chat message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

impl Tokenizer {
    /// Renders `messages` with the model's template, ending with the assistant's turn opened when
    /// `add_generation_prompt`.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            EngineError::Template("the model has no chat template; send a plain prompt".into())
        })?;
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| -> String {
            // Templates use this for a date line; a fixed date keeps prompts reproducible.
            fmt.replace("%d", "01")
                .replace("%b", "Jan")
                .replace("%B", "January")
                .replace("%Y", "2026")
        });
        env.add_template("chat", template)
            .map_err(|e| EngineError::Template(format!("cannot parse: {e}")))?;
        let t = env
            .get_template("chat")
            .map_err(|e| EngineError::Template(e.to_string()))?;
        t.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.special_text(self.bos),
            eos_token => self.special_text(self.eos),
        })
        .map_err(|e| EngineError::Template(format!("cannot render: {e}")))
    }
}
