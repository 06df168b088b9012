-- Each contact row carries a seal under the store key over its pinned identity, its
-- verified flag and any changed identity (see src/store.rs), so that an edit of the file
-- (a swapped identity key, a verified flag set) is detected rather than trusted. Rows made
-- before this migration are sealed once when the store is next opened.
ALTER TABLE contacts ADD COLUMN check_sealed BLOB;
