//! WIT types ⇄ JSON Schema and JSON values: how a component's typed exports become
//! MCP tools. No runtime or protocol code lives here. The encoding is documented in
//! docs/type-mapping.md.

pub mod content;
pub mod convert;
pub mod docs;
pub mod json_schema;
pub mod naming;
pub mod served;
pub mod signature;
pub mod uri_template;
pub mod wit_type;

pub use convert::{ConvertError, arguments_to_values, from_value, to_value};
pub use signature::{
    ComponentDescription, ExportPath, ResultShape, ToolSignature, describe_component,
};
pub use wit_type::WitType;

#[cfg(test)]
mod proptests;
