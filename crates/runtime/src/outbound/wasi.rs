//! wasi:http's outgoing-handler, answered by [`Outbound`]: the guest's request
//! body is read (up to the cap) so a retry can send it again, the response
//! arrives whole, and every refusal reaches the guest as an error that says why.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks};

use super::{Outbound, Scope};
use crate::capabilities::CallContext;
use mcpplus_policy::Policy;

/// One call's wasi:http state.
pub struct GuestHttp {
    pub ctx: WasiHttpCtx,
    pub hooks: GuestHttpHooks,
}

pub struct GuestHttpHooks {
    outbound: Arc<Outbound>,
    policy: Arc<Policy>,
    call: Arc<CallContext>,
    deadline: Instant,
}

impl GuestHttp {
    pub fn new(
        outbound: Arc<Outbound>,
        policy: Arc<Policy>,
        call: Arc<CallContext>,
        deadline: Instant,
    ) -> Self {
        Self {
            ctx: WasiHttpCtx::new(),
            hooks: GuestHttpHooks {
                outbound,
                policy,
                call,
                deadline,
            },
        }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for GuestHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let outbound = self.outbound.clone();
        let policy = self.policy.clone();
        let call = self.call.clone();
        let deadline = self.deadline;
        Box::new(async move {
            let (parts, body) = request.into_parts();
            let cap = outbound.config().max_request_bytes;
            let body = tokio::time::timeout_at(deadline.into(), read_capped(body, cap))
                .await
                .map_err(|_| Error::ConnectionWriteTimeout)??;
            let request = http::Request::from_parts(parts, body);
            let scope = Scope {
                grants: &policy.network,
                call: &call,
                deadline,
                connect_timeout: options.and_then(|o| o.connect_timeout),
                first_byte_timeout: options.and_then(|o| o.first_byte_timeout),
            };
            let response = outbound
                .send(request, &scope)
                .await
                .map_err(|e| e.to_wasi())?;
            let response = response.map(|bytes| {
                Full::new(bytes)
                    .map_err(|never| match never {})
                    .boxed_unsync()
            });
            Ok((response, Box::new(async { Ok(()) }) as IoFuture))
        })
    }
}

/// The whole request body, or an error once it passes `cap` bytes.
async fn read_capped(mut body: WasiBody, cap: u64) -> Result<Bytes, Error> {
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if collected.len() as u64 + data.len() as u64 > cap {
                return Err(Error::HttpRequestBodySize(Some(cap)));
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}
