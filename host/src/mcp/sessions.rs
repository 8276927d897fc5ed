//! Legacy-era HTTP sessions, bounded: at most `max` at once, and a session
//! nobody used for `idle` is closed (rmcp's own worker stops after the same
//! idle time, but leaves its entry in the map; without this, sessions of
//! clients that vanished would pile up and fill the cap).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::common::server_side_http::{ServerSseMessage, SessionId};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};

pub struct BoundedSessions {
    inner: LocalSessionManager,
    max: usize,
    idle: Duration,
    last_used: Mutex<HashMap<SessionId, Instant>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error(
        "this server already has {0} open sessions (its limit); close one (HTTP DELETE) or try again later"
    )]
    Full(usize),
    #[error(transparent)]
    Inner(#[from] LocalSessionManagerError),
}

impl BoundedSessions {
    pub fn new(max: usize, idle: Duration) -> Self {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = Some(idle);
        Self {
            inner,
            max,
            idle,
            last_used: Mutex::default(),
        }
    }

    fn touch(&self, id: &SessionId) {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Instant::now());
    }

    fn forget(&self, id: &SessionId) {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Close the sessions idle for longer than `idle`.
    async fn sweep(&self) {
        let stale: Vec<SessionId> = {
            let used = self.last_used.lock().unwrap_or_else(|e| e.into_inner());
            used.iter()
                .filter(|(_, at)| at.elapsed() >= self.idle)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in stale {
            let _ = self.inner.close_session(&id).await;
            self.forget(&id);
            tracing::info!(event = "http.session_expired", session = %id, "closed an idle session");
        }
    }

    /// Sessions open now.
    pub async fn open(&self) -> usize {
        self.inner.sessions.read().await.len()
    }
}

impl SessionManager for BoundedSessions {
    type Error = SessionsError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.sweep().await;
        let open = self.open().await;
        if open >= self.max {
            tracing::warn!(
                event = "http.sessions_full",
                open,
                "refused a new session: the limit is reached"
            );
            return Err(SessionsError::Full(open));
        }
        let (id, transport) = self.inner.create_session().await?;
        self.touch(&id);
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.touch(id);
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.forget(id);
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.touch(id);
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.touch(id);
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.touch(id);
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.touch(id);
        Ok(self.inner.resume(id, last_event_id).await?)
    }
}
