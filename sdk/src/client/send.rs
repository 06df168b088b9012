//! Sending texts and receipts.

use super::*;

impl Client {
    /// Sends a text message to every device of `username` (and a copy to our other devices).
    /// Returns the message's local id in the history.
    pub async fn send(&mut self, username: &str, text: &str) -> Result<i64, ClientError> {
        let uid = random_id()?;
        let time = now_ms();
        let conversation = Conversation::direct(username);
        let timer = self.outgoing_timer(&conversation).await?;
        let to_them = Payload::text(text, None, &uid)
            .at(time)
            .expiring(timer)
            .to_bytes()?;
        let to_us = Payload::text(text, Some(username), &uid)
            .at(time)
            .expiring(timer)
            .to_bytes()?;
        self.send_payload(username, &to_them, &to_us).await?;
        let expires_at = self.expiry_of(&conversation, time, timer).await?;
        let id = self
            .store
            .add_message(
                &conversation,
                true,
                self.account.device,
                time,
                text.as_bytes(),
                Some(&uid),
                expires_at,
            )
            .await?;
        Ok(id)
    }

    /// Sends a receipt for messages from `username` to their devices (and a copy to ours).
    pub async fn send_receipt(
        &mut self,
        username: &str,
        receipt: ReceiptKind,
        message_ids: &[String],
    ) -> Result<(), ClientError> {
        let body = |to: Option<&str>| Payload::receipt(receipt, message_ids, to);
        let to_them = body(None).to_bytes()?;
        let to_us = body(Some(username)).to_bytes()?;
        self.send_payload(username, &to_them, &to_us).await?;
        Ok(())
    }

    /// Marks the unread messages from `username` read and sends them a read receipt.
    /// Returns how many messages it covered.
    pub async fn mark_read(&mut self, username: &str) -> Result<usize, ClientError> {
        let uids = self.store.mark_incoming_read(username).await?;
        if !uids.is_empty() {
            self.send_receipt(username, ReceiptKind::Read, &uids)
                .await?;
        }
        Ok(uids.len())
    }

    /// Encrypts and sends one payload to every device of `username` and a copy to our
    /// other devices, following the server's device-mismatch answers. Returns the server
    /// time of the send.
    pub(crate) async fn send_payload(
        &mut self,
        username: &str,
        to_them: &[u8],
        to_us: &[u8],
    ) -> Result<i64, ClientError> {
        if let Some(contact) = self.store.contact(username).await?
            && contact.changed_identity_key.is_some()
        {
            return Err(ClientError::IdentityChanged {
                username: username.to_owned(),
                verified: contact.verified,
            });
        }
        let client_message_id = random_id()?;
        let me = self.account.username.clone();
        let mut theirs = self.checked_devices(username).await?;
        let mut ours = if username == me {
            BTreeSet::new()
        } else {
            self.checked_devices(&me).await?
        };

        for _ in 0..SEND_ATTEMPTS {
            if theirs.is_empty() {
                return Err(ClientError::NoDevices(username.to_owned()));
            }
            let recipient_devices = self.encrypt_for(username, &theirs, to_them).await?;
            let own_devices = self.encrypt_for(&me, &ours, to_us).await?;
            let request = api::SendMessageRequest {
                client_message_id: client_message_id.clone(),
                recipient: username.to_owned(),
                recipient_devices,
                own_devices,
            };
            match self.transport.send(&request).await {
                Ok(response) => return Ok(response.server_timestamp.0),
                Err(TransportError::DeviceMismatch(mismatch)) => {
                    // Only the recipient's devices and our own may be named; anything else
                    // is refused before any of the answer is used.
                    for address in mismatch.missing.iter().chain(&mismatch.stale) {
                        let named = &address.username;
                        let device = address.device_id;
                        if *named != me && named != username {
                            return Err(ServerClaim::DeviceOfStranger {
                                named: named.clone(),
                                device: address.device_id,
                                recipient: username.to_owned(),
                            }
                            .into());
                        }
                        if *named == me && device == self.account.device {
                            return Err(ServerClaim::ThisDevice.into());
                        }
                    }
                    for address in mismatch.stale {
                        let set = if address.username == me {
                            &mut ours
                        } else {
                            &mut theirs
                        };
                        set.remove(&address.device_id);
                    }
                    // A new device gets a session from a claimed bundle, whose identity is
                    // checked against the pin (or the account identity) in `sessions_for`.
                    for address in mismatch.missing {
                        let set = if address.username == me {
                            &mut ours
                        } else {
                            &mut theirs
                        };
                        set.insert(address.device_id);
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ClientError::DevicesUnstable)
    }
}
