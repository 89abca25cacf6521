//! The results page written by `search --html` and the demo: one section per query, a grid of
//! thumbnails with rank, score, id and caption. People judge image retrieval by looking.
//!
//! Thumbnails are embedded as data URIs so the page is one self-contained file; images larger
//! than [`EMBED_LIMIT`] are linked by path instead.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

/// Images up to this size are embedded into the page.
pub const EMBED_LIMIT: u64 = 2 << 20;

/// One hit as the page shows it.
#[derive(Debug, Clone)]
pub struct ShownHit {
    pub id: u64,
    pub score: f32,
    pub caption: Option<String>,
    pub uri: Option<String>,
}

/// One query and its ranked hits.
#[derive(Debug, Clone)]
pub struct QueryResults {
    /// What was asked: the query text, or "image: path".
    pub label: String,
    /// The query image, shown beside the label for image queries.
    pub query_image: Option<String>,
    pub hits: Vec<ShownHit>,
    /// Coarse scan and fine re-rank time, when measured.
    pub timing: Option<(Duration, Duration)>,
}

/// Writes the page for `results` to `path`; `about` is a line under the title (the database,
/// model and sizes).
pub fn write_page(
    path: &Path,
    title: &str,
    about: &str,
    results: &[QueryResults],
) -> std::io::Result<()> {
    fs::write(path, render_page(title, about, results))
}

/// Renders the page as one HTML string.
pub fn render_page(title: &str, about: &str, results: &[QueryResults]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title>\n<style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n\
         <p class=\"about\">{about}</p>\n",
        title = escape(title),
        about = escape(about)
    );
    for query in results {
        out.push_str("<section>\n<h2>");
        if let Some(image) = &query.query_image {
            let _ = write!(
                out,
                "<img class=\"query\" src=\"{}\" alt=\"\">",
                image_src(image)
            );
        }
        out.push_str(&escape(&query.label));
        out.push_str("</h2>\n");
        if let Some((coarse, fine)) = query.timing {
            let _ = writeln!(
                out,
                "<p class=\"timing\">coarse scan {:.2} ms · fine re-rank {:.2} ms</p>",
                ms(coarse),
                ms(fine)
            );
        }
        if query.hits.is_empty() {
            out.push_str("<p>no results</p>\n");
        }
        out.push_str("<div class=\"grid\">\n");
        for (rank, hit) in query.hits.iter().enumerate() {
            let thumb = match &hit.uri {
                Some(uri) => format!("<img src=\"{}\" alt=\"\" loading=\"lazy\">", image_src(uri)),
                None => "<div class=\"noimg\">no image</div>".to_string(),
            };
            let _ = writeln!(
                out,
                "<figure title=\"{full}\">{thumb}<figcaption><b>#{rank}</b> \
                 <span class=\"score\">{score:.4}</span> <span class=\"id\">id {id}</span><br>\
                 {caption}</figcaption></figure>",
                rank = rank + 1,
                score = hit.score,
                id = hit.id,
                full = escape(hit.caption.as_deref().unwrap_or("")),
                caption = escape(&shorten(
                    hit.caption.as_deref().unwrap_or(""),
                    CAPTION_CHARS
                )),
            );
        }
        out.push_str("</div>\n</section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// Caption characters shown under a thumbnail; the full caption is the figure's tooltip.
const CAPTION_CHARS: usize = 70;

/// `s` cut to `max` characters, with an ellipsis when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.2em 1.5em;background:#fafafa;color:#222}\
h1{font-size:1.5em;margin:0}.about{color:#555;margin:.2em 0 .6em}\
h2{font-size:1em;margin:1em 0 .2em;display:flex;align-items:center;gap:.6em}\
.timing{color:#666;font-size:.8em;margin:0 0 .4em}\
.grid{display:flex;flex-wrap:wrap;gap:8px}\
figure{margin:0;width:120px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:5px}\
figure img,.noimg{width:120px;height:96px;object-fit:contain;display:block}\
.noimg{display:flex;align-items:center;justify-content:center;color:#999}\
figcaption{font-size:.78em;margin-top:4px;overflow-wrap:anywhere}\
.score{color:#05a}.id{color:#888}\
img.query{width:64px;height:64px;object-fit:contain;border:1px solid #ccc;background:#fff}";

/// A data URI for a local image small enough to embed, otherwise the path itself.
fn image_src(uri: &str) -> String {
    let path = Path::new(uri);
    let mime = match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        _ => return escape(uri),
    };
    let small = fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= EMBED_LIMIT);
    match small.then(|| fs::read(path)).and_then(Result::ok) {
        Some(bytes) => format!(
            "data:{mime};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
        None if path.is_absolute() => escape(&format!("file://{uri}")),
        None => escape(uri),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_embeds_small_images_and_escapes_captions() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("x.png");
        fs::write(&image, b"\x89PNG fake").unwrap();
        let results = [QueryResults {
            label: "cats & <dogs>".into(),
            query_image: None,
            hits: vec![
                ShownHit {
                    id: 7,
                    score: 0.5,
                    caption: Some("a \"cat\"".into()),
                    uri: Some(image.to_string_lossy().into_owned()),
                },
                ShownHit {
                    id: 8,
                    score: 0.25,
                    caption: None,
                    uri: Some("/missing/y.png".into()),
                },
            ],
            timing: Some((Duration::from_micros(1500), Duration::from_micros(250))),
        }];
        let page = render_page("t", "300 items", &results);
        assert!(page.contains("cats &amp; &lt;dogs&gt;"));
        assert!(page.contains("<p class=\"about\">300 items</p>"));
        assert!(page.contains("a &quot;cat&quot;"));
        assert!(page.contains("data:image/png;base64,"));
        assert!(page.contains("src=\"file:///missing/y.png\""));
        assert!(page.contains("coarse scan 1.50 ms"));
        assert!(page.contains("<b>#2</b>"));
    }
}
