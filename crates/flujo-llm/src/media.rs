//! Message content beyond text: images and documents (PDF) as [`ContentPart`]s of a user message.
//!
//! A part's [`MediaSource`] is a URL (`https://…`), inline data (base64 with its media type; `data:` URIs
//! are read into this form) or a file. Files are read — and, for providers that take no URLs (Gemini,
//! Bedrock), URLs are fetched — by [`resolve_parts`] just before the request, so the journal keeps the
//! reference the pipeline gave, never megabytes of base64. Media types are taken from the file extension,
//! the `data:` URI or the server's `Content-Type`; only `image/png`, `image/jpeg`, `image/gif`,
//! `image/webp` and `application/pdf` are accepted (what every provider supports).
//!
//! From a pipeline, a model agent's input is multimodal when it is an object whose only key is `parts`, a
//! list of `{text: …}`, `{image: URL|PATH|DATA_URI}` or `{document: URL|PATH|DATA_URI}` items (each may add
//! `media_type`, and a document a `name`); see [`parts_from_input`].

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::LlmError;
use crate::http::HttpClient;

/// The largest image or document read from a file or URL (providers refuse larger ones anyway).
pub const MAX_MEDIA_BYTES: usize = 32 << 20;

/// Media types every provider accepts.
pub const SUPPORTED_MEDIA_TYPES: [&str; 5] = ["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"];

/// Where an image's or document's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum MediaSource {
    /// A URL the provider fetches (OpenAI, Anthropic) or Flujo fetches for it (Gemini, Bedrock).
    Url { url: String },
    /// The bytes, base64-encoded, with their media type.
    Base64 { media_type: String, data: String },
    /// A local file, read when the request is made.
    File { path: PathBuf },
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ContentPart {
    Text {
        text: String,
    },
    Image {
        source: MediaSource,
        /// The media type when the source does not say (a URL without extension).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_type: Option<String>,
    },
    /// A document (PDF).
    Document {
        source: MediaSource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_type: Option<String>,
        /// A file name shown to the model (Bedrock requires one; default `document`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

impl ContentPart {
    pub fn text(text: impl Into<String>) -> Self {
        ContentPart::Text { text: text.into() }
    }
    /// An image from `reference`: an `http(s)` URL, a `data:` URI or a file path.
    pub fn image(reference: &str) -> Self {
        ContentPart::Image { source: MediaSource::parse(reference), media_type: None }
    }
    /// A document (PDF) from `reference`: an `http(s)` URL, a `data:` URI or a file path.
    pub fn document(reference: &str) -> Self {
        ContentPart::Document { source: MediaSource::parse(reference), media_type: None, name: None }
    }
    /// An image from bytes.
    pub fn image_bytes(media_type: impl Into<String>, bytes: &[u8]) -> Self {
        ContentPart::Image {
            source: MediaSource::Base64 { media_type: media_type.into(), data: base64_encode(bytes) },
            media_type: None,
        }
    }

    /// The part's source, for media parts.
    pub fn source(&self) -> Option<&MediaSource> {
        match self {
            ContentPart::Text { .. } => None,
            ContentPart::Image { source, .. } | ContentPart::Document { source, .. } => Some(source),
        }
    }

    /// The media type: the explicit one, else what the source says (a `data:` URI, a file or URL
    /// extension); `None` when unknown.
    pub fn media_type(&self) -> Option<String> {
        match self {
            ContentPart::Text { .. } => None,
            ContentPart::Image { source, media_type } | ContentPart::Document { source, media_type, .. } => {
                media_type.clone().or_else(|| source.media_type())
            }
        }
    }

    /// For an inline part: its media type and base64 data.
    pub fn inline(&self) -> Option<(String, &str)> {
        match self.source()? {
            MediaSource::Base64 { media_type, data } => Some((self.media_type().unwrap_or(media_type.clone()), data)),
            _ => None,
        }
    }

    /// A short description for logs and the journal (`image https://…`, `document report.pdf`, `image
    /// (image/png, 1234 bytes of base64)`), never the data itself.
    pub fn describe(&self) -> String {
        let what = match self {
            ContentPart::Text { text } => return text.clone(),
            ContentPart::Image { .. } => "image",
            ContentPart::Document { .. } => "document",
        };
        match self.source() {
            Some(MediaSource::Url { url }) => format!("[{what} {url}]"),
            Some(MediaSource::File { path }) => format!("[{what} {}]", path.display()),
            Some(MediaSource::Base64 { media_type, data }) => {
                format!("[{what} ({media_type}, {} bytes of base64)]", data.len())
            }
            None => String::new(),
        }
    }
}

impl MediaSource {
    /// `http(s)://…` → URL; `data:TYPE;base64,DATA` → inline; anything else a file path.
    pub fn parse(reference: &str) -> Self {
        let r = reference.trim();
        if r.starts_with("http://") || r.starts_with("https://") {
            return MediaSource::Url { url: r.to_owned() };
        }
        if let Some(rest) = r.strip_prefix("data:") {
            if let Some((meta, data)) = rest.split_once(',') {
                if let Some(media_type) = meta.strip_suffix(";base64") {
                    return MediaSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
                }
            }
        }
        MediaSource::File { path: PathBuf::from(r) }
    }

    /// The media type the source itself says (inline data, or the extension of a file or URL path).
    pub fn media_type(&self) -> Option<String> {
        match self {
            MediaSource::Base64 { media_type, .. } => Some(media_type.clone()),
            MediaSource::File { path } => media_type_of(path),
            MediaSource::Url { url } => {
                let path = url.split(['?', '#']).next().unwrap_or(url);
                media_type_of(Path::new(path))
            }
        }
    }
}

/// The media type of a file name's extension (`png`, `jpg`/`jpeg`, `gif`, `webp`, `pdf`).
pub fn media_type_of(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(
        match ext.as_str() {
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "gif" => "image/gif",
            "webp" => "image/webp",
            "pdf" => "application/pdf",
            _ => return None,
        }
        .to_owned(),
    )
}

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn media_error(message: String) -> LlmError {
    LlmError::Config(message)
}

fn check_media_type(part: &ContentPart, media_type: Option<String>) -> Result<String, LlmError> {
    let what = if matches!(part, ContentPart::Document { .. }) { "document" } else { "image" };
    let media_type = media_type.ok_or_else(|| {
        media_error(format!(
            "the media type of {} is unknown: name a file with its extension or set `media_type`",
            part.describe()
        ))
    })?;
    let ok = SUPPORTED_MEDIA_TYPES.contains(&media_type.as_str())
        && (what == "document") == (media_type == "application/pdf");
    if !ok {
        return Err(media_error(format!(
            "{what} media type '{media_type}' is not supported (images: image/png, image/jpeg, image/gif, \
             image/webp; documents: application/pdf)"
        )));
    }
    Ok(media_type)
}

/// What [`resolve_parts`] turns into inline data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inline {
    /// Files only (the provider fetches URLs itself).
    Files,
    /// Files and URLs (the provider takes only bytes).
    FilesAndUrls,
}

/// Makes `parts` ready to send: files read (relative paths from the working directory) and, with
/// [`Inline::FilesAndUrls`], URLs fetched, into base64 parts with a checked media type. Text parts and
/// parts already inline pass through (their media type checked). A file or download over
/// [`MAX_MEDIA_BYTES`], an unreadable file, a failed download or an unsupported media type is a
/// [`LlmError::Config`] naming the part (nothing is sent).
pub async fn resolve_parts(
    parts: &[ContentPart],
    inline: Inline,
    http: &HttpClient,
) -> Result<Vec<ContentPart>, LlmError> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let Some(source) = part.source() else {
            out.push(part.clone());
            continue;
        };
        let (bytes_b64, sniffed) = match source {
            MediaSource::Base64 { data, .. } => (data.clone(), None),
            MediaSource::Url { .. } if inline == Inline::Files => {
                check_media_type(part, part.media_type().or_else(|| Some(default_media_type(part))))?;
                out.push(part.clone());
                continue;
            }
            MediaSource::Url { url } => {
                let (bytes, content_type) = http
                    .fetch_bytes(url, MAX_MEDIA_BYTES)
                    .await
                    .map_err(|e| media_error(format!("cannot download {}: {e}", part.describe())))?;
                (base64_encode(&bytes), content_type)
            }
            MediaSource::File { path } => {
                let bytes = read_file(path).await.map_err(|e| media_error(format!("{}: {e}", part.describe())))?;
                (base64_encode(&bytes), None)
            }
        };
        let media_type = check_media_type(part, part.media_type().or(sniffed))?;
        let source = MediaSource::Base64 { media_type: media_type.clone(), data: bytes_b64 };
        out.push(match part {
            ContentPart::Image { .. } => ContentPart::Image { source, media_type: Some(media_type) },
            ContentPart::Document { name, .. } => {
                ContentPart::Document { source, media_type: Some(media_type), name: name.clone() }
            }
            ContentPart::Text { .. } => part.clone(),
        });
    }
    Ok(out)
}

fn default_media_type(part: &ContentPart) -> String {
    match part {
        ContentPart::Document { .. } => "application/pdf".to_owned(),
        _ => "image/png".to_owned(),
    }
}

async fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| format!("cannot read the file: {e}"))?;
    if meta.len() > MAX_MEDIA_BYTES as u64 {
        return Err(format!("the file is {} bytes, more than the {MAX_MEDIA_BYTES} allowed", meta.len()));
    }
    tokio::fs::read(path).await.map_err(|e| format!("cannot read the file: {e}"))
}

/// The parts of a multimodal agent input: an object whose only key is `parts`, a list of `{text}`,
/// `{image}` or `{document}` items (with optional `media_type`, and `name` for a document). `Ok(None)` for
/// any other input (sent as text); `Err` for a `parts` object that is malformed (naming the item).
pub fn parts_from_input(input: &Value) -> Result<Option<Vec<ContentPart>>, LlmError> {
    let Some(obj) = input.as_object().filter(|o| o.len() == 1) else {
        return Ok(None);
    };
    let Some(items) = obj.get("parts") else {
        return Ok(None);
    };
    let items = items.as_array().ok_or_else(|| media_error("the input's `parts` must be a list".into()))?;
    let bad = |i: usize, why: &str| media_error(format!("input parts[{i}]: {why}"));
    let mut parts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Value::String(s) = item {
            parts.push(ContentPart::text(s.clone()));
            continue;
        }
        let o = item.as_object().ok_or_else(|| bad(i, "must be a string or an object"))?;
        let str_field = |k: &str| -> Result<Option<String>, LlmError> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(i, &format!("`{k}` must be a string"))),
            }
        };
        let kinds: Vec<&str> = ["text", "image", "document"].into_iter().filter(|k| o.contains_key(*k)).collect();
        if kinds.len() != 1 {
            return Err(bad(i, "needs exactly one of `text`, `image`, `document`"));
        }
        if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "text" | "image" | "document" | "media_type" | "name"))
        {
            return Err(bad(i, &format!("unknown key `{k}` (known: text, image, document, media_type, name)")));
        }
        let media_type = str_field("media_type")?;
        let part = match kinds[0] {
            "text" => ContentPart::text(match o.get("text") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            }),
            kind => {
                let reference = str_field(kind)?
                    .filter(|r| !r.trim().is_empty())
                    .ok_or_else(|| bad(i, &format!("`{kind}` must be a URL, a file path or a data: URI")))?;
                let source = MediaSource::parse(&reference);
                if kind == "image" {
                    ContentPart::Image { source, media_type }
                } else {
                    ContentPart::Document { source, media_type, name: str_field("name")? }
                }
            }
        };
        parts.push(part);
    }
    Ok(Some(parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sources_and_media_types() {
        assert_eq!(MediaSource::parse("https://x.test/a.PNG?s=1").media_type().as_deref(), Some("image/png"));
        assert_eq!(
            MediaSource::parse("data:image/webp;base64,AAAA"),
            MediaSource::Base64 { media_type: "image/webp".into(), data: "AAAA".into() }
        );
        assert_eq!(MediaSource::parse("docs/r.pdf").media_type().as_deref(), Some("application/pdf"));
        assert_eq!(MediaSource::parse("notes.txt").media_type(), None);
    }

    #[test]
    fn parts_from_pipeline_input() {
        let input = json!({"parts": ["Describe:", {"image": "https://x.test/cat.jpg"},
            {"document": "r.pdf", "name": "report"}, {"text": 5}]});
        let parts = parts_from_input(&input).unwrap().unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], ContentPart::text("Describe:"));
        assert_eq!(parts[1].media_type().as_deref(), Some("image/jpeg"));
        assert!(matches!(&parts[2], ContentPart::Document { name: Some(n), .. } if n == "report"));
        assert_eq!(parts[3], ContentPart::text("5"));
        assert_eq!(parts_from_input(&json!({"parts": 1, "other": 2})).unwrap(), None);
        assert_eq!(parts_from_input(&json!("text")).unwrap(), None);
        for bad in [
            json!({"parts": "x"}),
            json!({"parts": [{"image": "a.png", "text": "b"}]}),
            json!({"parts": [{"imgae": "a.png"}]}),
            json!({"parts": [{"image": ""}]}),
            json!({"parts": [{"image": "a.png", "colour": 1}]}),
            json!({"parts": [3]}),
        ] {
            let e = parts_from_input(&bad).unwrap_err().to_string();
            assert!(e.contains("parts"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        std::fs::write(&png, b"\x89PNG fake").unwrap();
        let http = HttpClient::new().unwrap();
        let parts = [ContentPart::text("x"), ContentPart::image(png.to_str().unwrap())];
        let out = resolve_parts(&parts, Inline::Files, &http).await.unwrap();
        assert_eq!(out[1].inline(), Some(("image/png".to_owned(), base64_encode(b"\x89PNG fake").as_str())));
        let txt = dir.path().join("a.txt");
        std::fs::write(&txt, b"x").unwrap();
        let e = resolve_parts(&[ContentPart::image(txt.to_str().unwrap())], Inline::Files, &http).await.unwrap_err();
        assert!(e.to_string().contains("media type"), "{e}");
        let e = resolve_parts(&[ContentPart::document(png.to_str().unwrap())], Inline::Files, &http).await.unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        let e = resolve_parts(&[ContentPart::image("/no/such/file.png")], Inline::Files, &http).await.unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        // URLs pass through unless the provider needs bytes.
        let url = [ContentPart::image("https://x.test/a.gif")];
        assert_eq!(resolve_parts(&url, Inline::Files, &http).await.unwrap(), url.to_vec());
    }
}
