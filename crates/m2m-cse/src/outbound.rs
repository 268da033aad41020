//! The ways out that the binding entry layer lends the layers below it, which never import a
//! binding: the connections entities opened to this CSE (TS-0020 clause 5.2: a WebSocket carries
//! requests both ways), the MQTT server this CSE is a client of (TS-0010 clause 6.4.3), and a
//! watcher of registrations (the MQTT server's ACL). The bindings register theirs at start.

use crate::context::Context;
use futures_util::future::BoxFuture;
use m2m_core::serialization::Serialization;
use m2m_core::{EntityId, M2mResult, Request, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection an entity opened, on which this CSE sends it requests and awaits the answers.
pub(crate) trait Link: Send + Sync {
    /// Sends `req` and waits at most `timeout` for its answer.
    fn request<'a>(
        &'a self,
        req: &'a Request,
        timeout: Duration,
    ) -> BoxFuture<'a, M2mResult<Response>>;

    /// Whether the connection is still open (a closed one is never bound again).
    fn is_open(&self) -> bool;
}

/// The open connections by the entity proven on each (the latest connection of an entity wins:
/// one connection between two nodes, TS-0020 clause 5.2).
#[derive(Default)]
pub(crate) struct Links {
    by_entity: Mutex<HashMap<EntityId, Arc<dyn Link>>>,
}

impl Links {
    /// The connection of `entity`, if it has one open.
    pub(crate) fn of(&self, entity: &EntityId) -> Option<Arc<dyn Link>> {
        lock(&self.by_entity)
            .get(entity)
            .filter(|l| l.is_open())
            .cloned()
    }

    /// Carries the requests for `entity` over `link` from now on.
    pub(crate) fn bind(&self, entity: EntityId, link: Arc<dyn Link>) {
        let mut by_entity = lock(&self.by_entity);
        // Checked under the lock `close` takes: a link closed meanwhile is never bound again.
        if link.is_open() {
            by_entity.insert(entity, link);
        }
    }

    /// Forgets the connection of an entity that is deleted: a later entity of the same ID,
    /// whoever registers it, is not reached over it.
    pub(crate) fn forget(&self, entity: &EntityId) {
        lock(&self.by_entity).remove(entity);
    }

    /// Forgets every entity of a closed connection.
    pub(crate) fn close(&self, link: &Arc<dyn Link>) {
        lock(&self.by_entity).retain(|_, l| !Arc::ptr_eq(l, link));
    }
}

/// The MQTT server this CSE is a client of: an entity whose pointOfAccess is an `mqtt(s)://` URL
/// is reached through it.
pub(crate) trait MqttServer: Send + Sync {
    /// Sends `req` to `target` (whose pointOfAccess is `poa`) and awaits its answer.
    fn send<'a>(
        &'a self,
        cse: &'a Context,
        poa: &'a str,
        target: &'a EntityId,
        req: &'a Request,
        ser: Serialization,
    ) -> BoxFuture<'a, M2mResult<Response>>;
}

/// Whether a point of access is an MQTT one (TS-0010 clause 6.6).
pub(crate) fn is_mqtt_url(s: &str) -> bool {
    s.starts_with("mqtts://") || s.starts_with("mqtt://")
}

/// Told whenever an AE registers or is deleted (the MQTT server's ACL names the registered AEs).
pub(crate) trait RegistrationWatch: Send + Sync {
    fn changed(&self, cse: &Context);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Fake(AtomicBool);

    impl Link for Fake {
        fn request<'a>(
            &'a self,
            _req: &'a Request,
            _timeout: Duration,
        ) -> BoxFuture<'a, M2mResult<Response>> {
            Box::pin(async { Err(m2m_core::M2mError::internal("not sent")) })
        }
        fn is_open(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn entity(s: &str) -> EntityId {
        let home = m2m_core::Home::cse(
            m2m_core::SpId::parse("in.provider.com").unwrap(),
            m2m_core::CseId::parse("in-cse").unwrap(),
        );
        EntityId::parse(s, &home).unwrap()
    }

    #[test]
    fn a_closed_link_is_neither_bound_nor_found() {
        let links = Links::default();
        let open: Arc<dyn Link> = Arc::new(Fake(AtomicBool::new(true)));
        let shut: Arc<dyn Link> = Arc::new(Fake(AtomicBool::new(false)));
        links.bind(entity("Cphone"), Arc::clone(&open));
        links.bind(entity("Clock"), Arc::clone(&shut));
        assert!(links.of(&entity("Cphone")).is_some());
        assert!(links.of(&entity("Clock")).is_none());
        links.close(&open);
        assert!(links.of(&entity("Cphone")).is_none());
    }

    #[test]
    fn a_deleted_entity_is_forgotten_and_the_latest_link_wins() {
        let links = Links::default();
        let first: Arc<dyn Link> = Arc::new(Fake(AtomicBool::new(true)));
        let second: Arc<dyn Link> = Arc::new(Fake(AtomicBool::new(true)));
        links.bind(entity("Cphone"), Arc::clone(&first));
        links.bind(entity("Cphone"), Arc::clone(&second));
        let found = links.of(&entity("Cphone")).unwrap();
        assert!(Arc::ptr_eq(&found, &second));
        // Closing the first connection leaves the second bound.
        links.close(&first);
        assert!(links.of(&entity("Cphone")).is_some());
        links.forget(&entity("Cphone"));
        assert!(links.of(&entity("Cphone")).is_none());
    }
}
