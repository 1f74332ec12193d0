//! Documents as PDF, through `lopdf`: one A4 page per document, lines of text in the standard
//! Helvetica (every PDF reader has it, so nothing is embedded), encoded as WinAnsi. Text stays
//! text (searchable, copyable, and what the tests read back).

use lopdf::content::{Content, Operation};
use lopdf::{Document, Encoding, Object, Stream, dictionary};

/// One line of a page: its size in points, whether bold, and its text.
#[derive(Debug, Clone)]
pub struct Line {
    pub size: f32,
    pub bold: bool,
    pub text: String,
}

impl Line {
    pub fn heading(text: impl Into<String>) -> Self {
        Self {
            size: 18.0,
            bold: true,
            text: text.into(),
        }
    }

    pub fn strong(text: impl Into<String>) -> Self {
        Self {
            size: 11.0,
            bold: true,
            text: text.into(),
        }
    }

    pub fn text(text: impl Into<String>) -> Self {
        Self {
            size: 11.0,
            bold: false,
            text: text.into(),
        }
    }

    pub fn blank() -> Self {
        Self::text("")
    }
}

const A4: (f32, f32) = (595.0, 842.0);
const MARGIN: f32 = 56.0;

/// A PDF with one page per entry of `pages`, titled `title`.
pub fn render(title: &str, pages: &[Vec<Line>]) -> Result<Vec<u8>, lopdf::Error> {
    let mut doc = Document::with_version("1.7");
    let pages_id = doc.new_object_id();
    let font = |name: &str| {
        dictionary! {
            "Type" => "Font",
            "Subtype" => "Type1",
            "BaseFont" => name,
            "Encoding" => "WinAnsiEncoding",
        }
    };
    let regular = doc.add_object(font("Helvetica"));
    let bold = doc.add_object(font("Helvetica-Bold"));
    let resources = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => regular, "F2" => bold },
    });
    let encoding = Encoding::SimpleEncoding(b"WinAnsiEncoding");
    let mut kids = Vec::with_capacity(pages.len());
    for lines in pages {
        let mut operations = Vec::with_capacity(lines.len() * 4 + 2);
        let mut y = A4.1 - MARGIN;
        for line in lines {
            y -= line.size * 1.5;
            if line.text.is_empty() {
                continue;
            }
            operations.extend([
                Operation::new("BT", vec![]),
                Operation::new(
                    "Tf",
                    vec![if line.bold { "F2" } else { "F1" }.into(), line.size.into()],
                ),
                Operation::new("Td", vec![MARGIN.into(), y.into()]),
                Operation::new(
                    "Tj",
                    vec![Object::string_literal(Document::encode_text(
                        &encoding, &line.text,
                    ))],
                ),
                Operation::new("ET", vec![]),
            ]);
        }
        let content = Content { operations }.encode()?;
        let content_id = doc.add_object(Stream::new(dictionary! {}, content));
        kids.push(Object::Reference(doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
        })));
    }
    let count = i64::try_from(kids.len()).unwrap_or(i64::MAX);
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => count,
            "Resources" => resources,
            "MediaBox" => vec![0.into(), 0.into(), A4.0.into(), A4.1.into()],
        }),
    );
    let info = doc.add_object(dictionary! {
        "Title" => Object::string_literal(Document::encode_text(&encoding, title)),
        "Producer" => Object::string_literal("Tessera"),
    });
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    doc.trailer.set("Info", info);
    doc.compress();
    let mut out = Vec::new();
    doc.save_to(&mut out)?;
    Ok(out)
}

/// The text of every page of a PDF, in order (what a reader's "copy text" gives).
pub fn text_of(pdf: &[u8]) -> Result<String, lopdf::Error> {
    let doc = Document::load_mem(pdf)?;
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    doc.extract_text(&pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_as_text() {
        let pdf = render(
            "Receipt 2026-000001",
            &[
                vec![
                    Line::heading("Receipt 2026-000001"),
                    Line::text("Déjà vu tour — 1,780.00 EUR"),
                ],
                vec![Line::strong("Credit note CN-2026-000001")],
            ],
        )
        .expect("render");
        assert!(pdf.starts_with(b"%PDF-1.7"));
        let text = text_of(&pdf).expect("read back");
        assert!(text.contains("Receipt 2026-000001"), "{text}");
        assert!(text.contains("Déjà vu tour — 1,780.00 EUR"), "{text}");
        assert!(text.contains("Credit note CN-2026-000001"), "{text}");
    }
}
