//! The smallest tool component: `echo(message) -> message`, exported at the top
//! level of its world and importing nothing from the host, so the same file can be
//! served by mcpplus and by other component hosts (scripts/bench-peers.sh).

wit_bindgen::generate!({ path: "wit", world: "echo-min" });

struct EchoMin;

impl Guest for EchoMin {
    fn echo(message: String) -> String {
        message
    }
}

export!(EchoMin);
