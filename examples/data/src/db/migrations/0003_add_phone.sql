-- Migration 0003 (2024-02-01): add a phone column
ALTER TABLE customers ADD COLUMN phone VARCHAR(32);
-- schema version 3.1.4, batch 20240201
UPDATE schema_info SET version = '3.1.4', applied_at = '2024-02-01 12:00:00';
