//! Test fixture: the tools the official MCP conformance suite calls by name
//! (`test_simple_text`, `test_tool_with_progress`, the tasks extension's `greet`,
//! `slow_compute`, …), written as an ordinary guest. Not bundled; served by
//! `scripts/conformance.sh`.

wit_bindgen::generate!({ path: "wit", world: "conformance-tool", generate_all });

use std::time::Duration;

use exports::mcpplus::conformance::conformance::Guest;
use mcpplus::host::types::{ContentBlock, EmbeddedResource, Media, ResourceData};
use mcpplus::host::{log, progress};

struct Conformance;

/// The pause between progress reports and between log lines.
const STEP: Duration = Duration::from_millis(50);

impl Guest for Conformance {
    fn test_simple_text() -> ContentBlock {
        ContentBlock::Text("This is a simple text response for testing.".into())
    }

    fn test_image_content() -> ContentBlock {
        png()
    }

    fn test_audio_content() -> ContentBlock {
        ContentBlock::Audio(Media {
            data: silent_wav(),
            mime_type: "audio/wav".into(),
        })
    }

    fn test_embedded_resource() -> ContentBlock {
        ContentBlock::Resource(EmbeddedResource {
            uri: "test://embedded-resource".into(),
            mime_type: Some("text/plain".into()),
            data: ResourceData::Text("This is an embedded resource content.".into()),
        })
    }

    fn test_multiple_content_types() -> Vec<ContentBlock> {
        vec![
            ContentBlock::Text("Multiple content types test:".into()),
            png(),
            ContentBlock::Resource(EmbeddedResource {
                uri: "test://mixed-content-resource".into(),
                mime_type: Some("application/json".into()),
                data: ResourceData::Text(r#"{"test":"data","value":123}"#.into()),
            }),
        ]
    }

    fn test_error_handling() -> Result<Vec<ContentBlock>, String> {
        Err("This tool intentionally returns an error for testing".into())
    }

    fn test_tool_with_progress() -> ContentBlock {
        for (i, done) in [0.0, 50.0, 100.0].into_iter().enumerate() {
            if i > 0 {
                std::thread::sleep(STEP);
            }
            progress::report(done, Some(100.0), Some(&format!("{done} of 100")));
        }
        ContentBlock::Text("Progress test completed".into())
    }

    fn test_tool_with_logging() -> ContentBlock {
        let lines = [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ];
        for (i, line) in lines.into_iter().enumerate() {
            if i > 0 {
                std::thread::sleep(STEP);
            }
            log::log(log::Level::Info, line, &[]);
        }
        ContentBlock::Text("Logging test completed".into())
    }

    fn test_logging_tool() -> ContentBlock {
        log::log(log::Level::Info, "test_logging_tool ran", &[]);
        ContentBlock::Text("Logged one line".into())
    }

    fn test_streaming_elicitation() -> ContentBlock {
        progress::report(50.0, Some(100.0), Some("halfway"));
        progress::report(100.0, Some(100.0), Some("done"));
        ContentBlock::Text("Streamed progress only".into())
    }

    fn greet(name: String) -> String {
        format!("Hello, {name}!")
    }

    fn slow_compute(seconds: f64, label: Option<String>) -> Result<String, String> {
        if !(0.0..=3600.0).contains(&seconds) {
            return Err(format!("`seconds` must be 0 to 3600, got {seconds}"));
        }
        if seconds > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(seconds));
        }
        Ok(match label {
            Some(label) => format!("computed for {seconds} s ({label})"),
            None => format!("computed for {seconds} s"),
        })
    }

    fn failing_job() -> Result<String, String> {
        std::thread::sleep(Duration::from_secs(1));
        Err("failing_job failed, as it always does".into())
    }

    fn protocol_error_job() -> String {
        std::thread::sleep(Duration::from_millis(100));
        panic!("protocol_error_job crashed on purpose")
    }
}

fn png() -> ContentBlock {
    ContentBlock::Image(Media {
        data: ONE_PIXEL_PNG.to_vec(),
        mime_type: "image/png".into(),
    })
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
    wav.extend_from_slice(&8000u32.to_le_bytes()); // sample rate
    wav.extend_from_slice(&8000u32.to_le_bytes()); // byte rate
    wav.extend_from_slice(&1u16.to_le_bytes()); // block align
    wav.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&samples.to_le_bytes());
    wav.extend(std::iter::repeat_n(0x80u8, samples as usize));
    wav
}

export!(Conformance);
