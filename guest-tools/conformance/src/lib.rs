//! Test fixture: the tools the official MCP conformance suite calls by name
//! (`test_simple_text`, `test_tool_with_progress`, the tasks extension's `greet`,
//! `slow_compute`, the sampling, elicitation and multi-round-trip tools over
//! `mcpplus:host/client`, …), written as an ordinary guest, and `ask_client`,
//! which mcpplus's own tests drive; and the suite's prompts and resources
//! (`mcpplus:host/prompts`, `mcpplus:host/resources`). Not bundled; served by
//! `scripts/conformance.sh` with `conformance.policy.toml` (`[client]` grants).

wit_bindgen::generate!({ path: "wit", world: "conformance-tool", generate_all });

use std::time::Duration;

use exports::mcpplus::conformance::conformance::{ClientRequest, Guest};
use exports::mcpplus::host::prompts::{
    self, Prompt, PromptArgument, PromptError, PromptMessage, PromptResult, Role,
};
use exports::mcpplus::host::resources::{
    self, Resource, ResourceContents, ResourceError, ResourceTemplate,
};
use mcpplus::host::client::{self, AskError};
use mcpplus::host::types::{ContentBlock, EmbeddedResource, Media, ResourceData};
use mcpplus::host::{log, progress};
use serde_json::{Value, json};

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

    fn test_sampling(prompt: String) -> Result<ContentBlock, String> {
        let answer = ask("sampling", SAMPLE, sampling(&prompt, 100))?;
        Ok(text(format!("LLM response: {}", sampled_text(&answer))))
    }

    fn test_elicitation(message: String) -> Result<ContentBlock, String> {
        let schema = json!({"type": "object", "properties": {
            "username": {"type": "string", "description": "Your username"},
            "email": {"type": "string", "description": "Your email address"}},
            "required": ["username", "email"]});
        let answer = ask("elicitation", ELICIT, form(&message, schema))?;
        Ok(text(format!("User response: {}", elicited(&answer))))
    }

    fn test_elicitation_sep1034_defaults() -> Result<ContentBlock, String> {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {"type": "string", "description": "User status",
                "enum": ["active", "inactive", "pending"], "default": "active"},
            "verified": {"type": "boolean", "description": "Verification status", "default": true}}});
        let answer = ask(
            "defaults",
            ELICIT,
            form(
                "Please review and update the form fields with defaults",
                schema,
            ),
        )?;
        Ok(text(format!(
            "Elicitation completed: {}",
            elicited(&answer)
        )))
    }

    fn test_elicitation_sep1330_enums() -> Result<ContentBlock, String> {
        let schema = json!({"type": "object", "properties": {
            "untitledSingle": {"type": "string", "description": "Choose an option",
                "enum": ["option1", "option2", "option3"]},
            "titledSingle": {"type": "string", "description": "Choose a titled option",
                "oneOf": [{"const": "value1", "title": "First Option"},
                          {"const": "value2", "title": "Second Option"},
                          {"const": "value3", "title": "Third Option"}]},
            "legacyEnum": {"type": "string", "description": "Choose a legacy option",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"]},
            "untitledMulti": {"type": "array", "description": "Choose multiple options",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
            "titledMulti": {"type": "array", "description": "Choose multiple titled options",
                "items": {"anyOf": [{"const": "value1", "title": "First Choice"},
                                    {"const": "value2", "title": "Second Choice"},
                                    {"const": "value3", "title": "Third Choice"}]}}}});
        let answer = ask(
            "enums",
            ELICIT,
            form("Please select options from the enum fields", schema),
        )?;
        Ok(text(format!(
            "Elicitation completed: {}",
            elicited(&answer)
        )))
    }

    fn test_input_required_result_elicitation() -> Result<ContentBlock, String> {
        let answer = ask("user_name", ELICIT, name_form("What is your name?"))?;
        Ok(text(format!("Hello, {}!", field(&answer, "name"))))
    }

    fn test_input_required_result_sampling() -> Result<ContentBlock, String> {
        let answer = ask(
            "capital_question",
            SAMPLE,
            sampling("What is the capital of France?", 100),
        )?;
        Ok(text(format!("The model says: {}", sampled_text(&answer))))
    }

    fn test_input_required_result_list_roots() -> Result<ContentBlock, String> {
        let answer = ask("client_roots", ROOTS, json!({}))?;
        Ok(text(format!("The client's roots: {}", roots(&answer))))
    }

    fn test_input_required_result_request_state() -> Result<ContentBlock, String> {
        let earlier = client::state();
        remember("request-state:confirm")?;
        let answer = ask("confirm", ELICIT, confirm_form())?;
        let verdict = if earlier.as_deref() == Some("request-state:confirm") {
            "state-ok"
        } else {
            "state-missing"
        };
        Ok(text(format!("{verdict}: confirmed {}", elicited(&answer))))
    }

    fn test_input_required_result_multiple_inputs() -> Result<ContentBlock, String> {
        remember("multiple-inputs")?;
        // Ask all three before stopping, so one round carries them all.
        let name = ask("user_name", ELICIT, name_form("What is your name?"));
        let greeting = ask("greeting", SAMPLE, sampling("Generate a greeting", 50));
        let listed = ask("client_roots", ROOTS, json!({}));
        let (name, greeting, listed) = (name?, greeting?, listed?);
        Ok(text(format!(
            "{} — {} (roots: {})",
            sampled_text(&greeting),
            field(&name, "name"),
            roots(&listed)
        )))
    }

    fn test_input_required_result_multi_round() -> Result<ContentBlock, String> {
        // Round 1 asks the name; round 2 keeps it in the state and asks the
        // colour; round 3 has both.
        let name = match client::state().and_then(|s| s.strip_prefix("name:").map(String::from)) {
            Some(name) => name,
            None => {
                remember("round:1")?;
                let answer = ask("step1", ELICIT, name_form("Step 1: What is your name?"))?;
                field(&answer, "name")
            }
        };
        remember(&format!("name:{name}"))?;
        let schema = json!({"type": "object", "properties": {"color": {"type": "string"}},
            "required": ["color"]});
        let answer = ask(
            "step2",
            ELICIT,
            form("Step 2: What is your favorite color?", schema),
        )?;
        Ok(text(format!("{name} likes {}", field(&answer, "color"))))
    }

    fn test_input_required_result_tampered_state() -> Result<ContentBlock, String> {
        remember("tampered-state:confirm")?;
        let answer = ask("confirm", ELICIT, confirm_form())?;
        Ok(text(format!("confirmed {}", elicited(&answer))))
    }

    fn test_input_required_result_capabilities() -> Result<ContentBlock, String> {
        // Each goes out only when the client declared its capability.
        let name = ask("user_name", ELICIT, name_form("What is your name?"));
        let capital = ask(
            "capital_question",
            SAMPLE,
            sampling("What is the capital of France?", 100),
        );
        let name = name.map(|a| field(&a, "name"));
        let capital = capital.map(|a| sampled_text(&a));
        match (name, capital) {
            (Err(e), _) | (_, Err(e)) if e == PENDING => Err(e),
            (name, capital) => Ok(text(format!(
                "name: {}; capital: {}",
                name.unwrap_or_else(|e| e),
                capital.unwrap_or_else(|e| e)
            ))),
        }
    }

    fn confirm_delete(filename: String) -> Result<String, String> {
        let schema = json!({"type": "object", "properties": {"confirm": {"type": "boolean"}},
            "required": ["confirm"]});
        let answer = ask(
            "confirm_delete",
            ELICIT,
            form(&format!("Delete {filename}?"), schema),
        )?;
        let confirmed = answer["action"] == "accept" && answer["content"]["confirm"] == true;
        Ok(if confirmed {
            format!("Deleted {filename}")
        } else {
            format!("Kept {filename}: not confirmed ({})", elicited(&answer))
        })
    }

    fn multi_input() -> Result<String, String> {
        // Ask both before stopping, so both are pending at once.
        let name = ask("name", ELICIT, name_form("What is your name?"));
        let confirm = ask("confirm", ELICIT, confirm_form());
        let (name, confirm) = (name?, confirm?);
        Ok(format!(
            "name: {}; confirm: {}",
            elicited(&name),
            elicited(&confirm)
        ))
    }

    fn ask_client(requests: Vec<ClientRequest>, remember: Option<String>) -> String {
        let mut answers = serde_json::Map::new();
        for r in requests {
            let answer = match client::ask(&r.key, &r.method, &r.params) {
                Ok(result) => serde_json::from_str(&result).unwrap_or(Value::String(result)),
                Err(AskError::Pending) => json!({"error": "pending"}),
                Err(AskError::NotSupported(m)) => json!({"error": "not-supported", "message": m}),
                Err(AskError::Failed(m)) => json!({"error": "failed", "message": m}),
            };
            answers.insert(r.key, answer);
        }
        let state = client::state();
        let kept = match remember {
            Some(s) => client::remember(&s).err(),
            None => None,
        };
        json!({"answers": answers, "state": state, "remember_error": kept}).to_string()
    }
}

const ELICIT: &str = "elicitation/create";
const SAMPLE: &str = "sampling/createMessage";
const ROOTS: &str = "roots/list";
/// What a tool returns while the host collects the client's answers (the
/// host discards it).
const PENDING: &str = "waiting for the client's answers";

/// Ask the client; the answer as JSON, or the text a tool error shows.
fn ask(key: &str, method: &str, params: Value) -> Result<Value, String> {
    match client::ask(key, method, &params.to_string()) {
        Ok(answer) => serde_json::from_str(&answer).map_err(|e| format!("not JSON: {e}")),
        Err(AskError::Pending) => Err(PENDING.into()),
        Err(AskError::NotSupported(m)) => Err(format!("not supported: {m}")),
        Err(AskError::Failed(m)) => Err(format!("failed: {m}")),
    }
}

fn remember(state: &str) -> Result<(), String> {
    client::remember(state)
}

fn text(s: String) -> ContentBlock {
    ContentBlock::Text(s)
}

fn form(message: &str, schema: Value) -> Value {
    json!({"message": message, "requestedSchema": schema})
}

fn name_form(message: &str) -> Value {
    form(
        message,
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
    )
}

fn confirm_form() -> Value {
    form(
        "Please confirm",
        json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}),
    )
}

fn sampling(prompt: &str, max_tokens: u32) -> Value {
    json!({"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
        "maxTokens": max_tokens})
}

/// `action=…, content=…` of an elicitation result.
fn elicited(answer: &Value) -> String {
    format!(
        "action={}, content={}",
        answer["action"].as_str().unwrap_or("?"),
        answer.get("content").unwrap_or(&Value::Null)
    )
}

/// A field of an accepted elicitation's content.
fn field(answer: &Value, name: &str) -> String {
    match &answer["content"][name] {
        Value::String(s) => s.clone(),
        Value::Null => format!("(no {name}: {})", answer["action"].as_str().unwrap_or("?")),
        other => other.to_string(),
    }
}

/// The text of a sampling result.
fn sampled_text(answer: &Value) -> String {
    let content = &answer["content"];
    let block = if content.is_array() {
        &content[0]
    } else {
        content
    };
    block["text"].as_str().unwrap_or("(no text)").to_string()
}

/// The roots of a `roots/list` result, by name (or URI).
fn roots(answer: &Value) -> String {
    let names: Vec<String> = answer["roots"]
        .as_array()
        .map(|roots| {
            roots
                .iter()
                .map(|r| {
                    let uri = r["uri"].as_str().unwrap_or("?");
                    match r["name"].as_str() {
                        Some(name) => format!("{name} ({uri})"),
                        None => uri.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
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

impl prompts::Guest for Conformance {
    fn list_prompts() -> Vec<Prompt> {
        let arg = |name: &str, description: &str| PromptArgument {
            name: name.into(),
            title: None,
            description: Some(description.into()),
            required: true,
        };
        let prompt = |name: &str, description: &str, arguments| Prompt {
            name: name.into(),
            title: None,
            description: Some(description.into()),
            arguments,
        };
        vec![
            prompt(
                "test_simple_prompt",
                "A simple prompt without arguments",
                vec![],
            ),
            prompt(
                "test_prompt_with_arguments",
                "A prompt with two required arguments",
                vec![
                    arg("arg1", "The first argument"),
                    arg("arg2", "The second argument"),
                ],
            ),
            prompt(
                "test_prompt_with_embedded_resource",
                "A prompt that embeds a resource",
                vec![arg("resourceUri", "The URI of the resource to embed")],
            ),
            prompt(
                "test_prompt_with_image",
                "A prompt that includes an image",
                vec![],
            ),
            prompt(
                "test_input_required_result_prompt",
                "A prompt that asks the user for context (key `user_context`) first",
                vec![],
            ),
            prompt(
                "test_trapping_prompt",
                "mcpplus's own test (not the suite's): crashes while rendering",
                vec![],
            ),
        ]
    }

    fn get_prompt(
        name: String,
        arguments: Vec<(String, String)>,
    ) -> Result<PromptResult, PromptError> {
        let arg = |key: &str| {
            arguments
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| PromptError::InvalidArguments(format!("`{key}` is required")))
        };
        let user = |content| PromptMessage {
            role: Role::User,
            content,
        };
        let messages = match name.as_str() {
            "test_simple_prompt" => vec![user(ContentBlock::Text(
                "This is a simple prompt for testing.".into(),
            ))],
            "test_prompt_with_arguments" => vec![user(ContentBlock::Text(format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                arg("arg1")?,
                arg("arg2")?
            )))],
            "test_prompt_with_embedded_resource" => vec![
                user(ContentBlock::Resource(EmbeddedResource {
                    uri: arg("resourceUri")?,
                    mime_type: Some("text/plain".into()),
                    data: ResourceData::Text("Embedded resource content for testing.".into()),
                })),
                user(ContentBlock::Text(
                    "Please process the embedded resource above.".into(),
                )),
            ],
            "test_prompt_with_image" => vec![
                user(png()),
                user(ContentBlock::Text("Please analyze the image above.".into())),
            ],
            "test_input_required_result_prompt" => {
                // A state for the next round (signed for this prompt), so
                // mcpplus's own tests can check a prompt's state is no tool's.
                remember("prompt:user_context").map_err(PromptError::Failed)?;
                let answer = ask(
                    "user_context",
                    ELICIT,
                    form(
                        "What context should the prompt use?",
                        json!({"type": "object", "properties": {"context": {"type": "string"}},
                            "required": ["context"]}),
                    ),
                )
                .map_err(PromptError::Failed)?;
                vec![user(ContentBlock::Text(format!(
                    "Prompt with context: {}",
                    field(&answer, "context")
                )))]
            }
            "test_trapping_prompt" => panic!("this prompt crashes on purpose"),
            _ => return Err(PromptError::NotFound),
        };
        Ok(PromptResult {
            description: None,
            messages,
        })
    }
}

impl resources::Guest for Conformance {
    fn list_resources() -> Vec<Resource> {
        let resource = |uri: &str, name: &str, description: &str, mime: &str| Resource {
            uri: uri.into(),
            name: name.into(),
            title: None,
            description: Some(description.into()),
            mime_type: Some(mime.into()),
            size: None,
        };
        vec![
            resource(
                "test://static-text",
                "static-text",
                "A static text resource",
                "text/plain",
            ),
            resource(
                "test://static-binary",
                "static-binary",
                "A static binary resource (a 1×1 PNG)",
                "image/png",
            ),
            resource(
                "test://watched-resource",
                "watched-resource",
                "A resource to subscribe to",
                "text/plain",
            ),
        ]
    }

    fn list_resource_templates() -> Vec<ResourceTemplate> {
        vec![ResourceTemplate {
            uri_template: "test://template/{id}/data".into(),
            name: "template-data".into(),
            title: None,
            description: Some("Data for the resource with that id, as JSON".into()),
            mime_type: Some("application/json".into()),
        }]
    }

    fn read_resource(uri: String) -> Result<Vec<ResourceContents>, ResourceError> {
        let text = |mime: &'static str, text: String| (mime, ResourceData::Text(text));
        let (mime, data) = match uri.as_str() {
            "test://static-text" => text(
                "text/plain",
                "This is the content of the static text resource.".into(),
            ),
            "test://static-binary" => ("image/png", ResourceData::Blob(ONE_PIXEL_PNG.to_vec())),
            "test://watched-resource" => text("text/plain", "Watched resource content".into()),
            _ => match uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                Some(id) => text(
                    "application/json",
                    json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")})
                        .to_string(),
                ),
                None => return Err(ResourceError::NotFound),
            },
        };
        Ok(vec![ResourceContents {
            uri,
            mime_type: Some(mime.into()),
            data,
        }])
    }
}

export!(Conformance);
