//! The connection caps: `mqtt.max_connections` for the whole broker and
//! `mqtt.max_connections_per_ip` for one client address, shared by every MQTT listener. A
//! [`ConnectionSlot`] is held by each admitted connection for its whole life and gives its
//! place back when dropped. Behind a trusted proxy the address is known only once the PROXY
//! header is read, so the per-address place is taken then.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::peers::{AddressBlock, AddressSlot, PerAddress};
use sealrelay_wire::Close;

pub struct Limits {
    global: Arc<Semaphore>,
    per_ip: PerAddress,
}

/// One admitted connection's place under the caps.
pub struct ConnectionSlot {
    _global: OwnedSemaphorePermit,
    per_ip: Option<AddressSlot>,
}

impl Limits {
    pub fn new(config: &crate::config::Mqtt, block: AddressBlock) -> Limits {
        Limits {
            global: Arc::new(Semaphore::new(config.max_connections)),
            per_ip: PerAddress::new(config.max_connections_per_ip, block),
        }
    }

    /// A place under the broker-wide cap only; the address's comes later ([`Limits::admit_ip`]).
    pub fn admit_global(&self) -> Result<ConnectionSlot, Close> {
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| Close::RefusedCapacity)?;
        Ok(ConnectionSlot {
            _global: global,
            per_ip: None,
        })
    }

    /// Adds `ip`'s place to `slot`, or says why the address is over its share.
    pub fn admit_ip(&self, slot: &mut ConnectionSlot, ip: IpAddr) -> Result<(), Close> {
        slot.per_ip = Some(self.per_ip.admit(ip).ok_or(Close::RefusedIpCapacity)?);
        Ok(())
    }

    /// A slot for a connection from `ip` under both caps, or the reason it is refused.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionSlot, Close> {
        let mut slot = self.admit_global()?;
        self.admit_ip(&mut slot, ip)?;
        Ok(slot)
    }
}
