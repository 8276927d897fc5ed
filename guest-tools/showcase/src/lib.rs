//! A bundled example tool whose exports cover every WIT type family, so a client
//! (or a test) can see how each maps to JSON Schema and JSON values.

wit_bindgen::generate!({ path: "wit", world: "showcase-tool", generate_all });

use exports::mcpplus::examples::showcase::{
    Color, Guest, Integers, InventoryItem, InventorySummary, Permissions, Point, PortError, Shape,
};
use mcpplus::host::types::{ContentBlock, EmbeddedResource, Media, ResourceData};
use mcpplus::host::{log, progress};

struct Showcase;

type Nested = Vec<Option<(String, Vec<Result<u8, String>>)>>;

impl Guest for Showcase {
    fn echo(message: String) -> String {
        message
    }

    fn echo_integers(values: Integers) -> Integers {
        values
    }

    fn scale(p: Point, factor: f32) -> Point {
        Point {
            x: p.x * factor as f64,
            y: p.y * factor as f64,
        }
    }

    fn area(s: Shape) -> f64 {
        match s {
            Shape::Circle(r) => std::f64::consts::PI * r * r,
            Shape::Rectangle((w, h)) => w * h,
            Shape::Empty => 0.0,
        }
    }

    fn describe(c: Color, perms: Permissions, initial: char, loud: bool) -> String {
        let color = match c {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
        };
        let mut granted = Vec::new();
        for (flag, name) in [
            (Permissions::READ, "read"),
            (Permissions::WRITE, "write"),
            (Permissions::EXECUTE, "execute"),
        ] {
            if perms.contains(flag) {
                granted.push(name);
            }
        }
        let granted = if granted.is_empty() {
            "nothing".to_string()
        } else {
            granted.join("+")
        };
        let sentence = format!("{initial} is {color} and may {granted}");
        if loud {
            sentence.to_uppercase()
        } else {
            sentence
        }
    }

    fn summarize(items: Vec<InventoryItem>) -> InventorySummary {
        InventorySummary {
            total_count: items.iter().map(|i| i.count as u32).sum(),
            names: items.iter().map(|i| i.name.clone()).collect(),
            notes: items.iter().filter_map(|i| i.note.clone()).collect(),
        }
    }

    fn checksum(data: Vec<u8>) -> (u32, Vec<u8>) {
        let sum = data.iter().map(|b| *b as u32).sum();
        (sum, data.into_iter().rev().collect())
    }

    fn divide(numerator: f64, denominator: f64) -> Result<f64, String> {
        if denominator == 0.0 {
            Err(format!("cannot divide {numerator} by zero"))
        } else {
            Ok(numerator / denominator)
        }
    }

    fn parse_port(text: String) -> Result<u16, PortError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PortError::Empty);
        }
        let n: u64 = text
            .parse()
            .map_err(|_| PortError::NotANumber(text.to_string()))?;
        u16::try_from(n).map_err(|_| PortError::OutOfRange(n))
    }

    fn maybe_double(x: Option<i32>) -> Option<i32> {
        x.map(|x| x.wrapping_mul(2))
    }

    fn nested(value: Nested) -> Nested {
        value
    }

    fn badge(label: String) -> Vec<ContentBlock> {
        vec![
            ContentBlock::Text(format!("badge: {label}")),
            ContentBlock::Image(Media {
                data: ONE_PIXEL_PNG.to_vec(),
                mime_type: "image/png".into(),
            }),
            ContentBlock::Audio(Media {
                data: silent_wav(),
                mime_type: "audio/wav".into(),
            }),
            ContentBlock::Resource(EmbeddedResource {
                uri: format!("badge://{label}"),
                mime_type: Some("text/plain".into()),
                data: ResourceData::Text(format!("[{label}]")),
            }),
        ]
    }

    fn noop() {}

    fn count_to(to: u32, pause_ms: u32) -> Result<u32, String> {
        if to > 1000 || pause_ms > 1000 {
            return Err("`to` and `pause_ms` are at most 1000".into());
        }
        for n in 1..=to {
            std::thread::sleep(std::time::Duration::from_millis(pause_ms.into()));
            log::log(
                log::Level::Info,
                "counted",
                &[("n".to_string(), n.to_string())],
            );
            progress::report(
                f64::from(n),
                Some(f64::from(to)),
                Some(&format!("{n} of {to}")),
            );
        }
        Ok(to)
    }
}

/// A valid 1×1 transparent PNG.
const ONE_PIXEL_PNG: [u8; 67] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

/// 10 ms of 8 kHz 8-bit mono silence as a WAV file.
fn silent_wav() -> Vec<u8> {
    let samples = 80u32;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + samples).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&8u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&samples.to_le_bytes());
    wav.extend(std::iter::repeat_n(0x80u8, samples as usize));
    wav
}

export!(Showcase);
