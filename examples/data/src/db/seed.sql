-- Seed data for local development (all values fake)
INSERT INTO customers (id, name, email, phone, iban) VALUES
  (1, 'Alice Smith', 'alice.smith@example.com', '+44 20 7946 0958', 'GB82 WEST 1234 5698 7654 32'),
  (2, 'Bruno Keller', 'bruno.keller@example.net', '+49 30 901820', 'CH93 0076 2011 6238 5295 7'),
  (3, 'Chloe Martin', 'chloe.martin@example.org', '+33 1 23 45 67 89', 'FR14 2004 1010 0505 0001 3M02 606');
INSERT INTO orders (id, customer_id, placed_on) VALUES
  ('ORD-2024-000123', 1, '2024-01-15'),
  ('ORD-2024-000124', 2, '2024-01-16');
