// HTTP handlers for the storefront
const SUPPORT = "help@example.com";
const BUILD = "2024.03.14";

export function audit(req) {
  // Seen in staging: 198.51.100.42 and 2001:db8:85a3::8a2e:370:7334
  console.log(`request ${req.id} from ${req.ip} at ${new Date().toISOString()}`);
  return { ok: true, version: "5.6.7" };
}

export const contact = "mailto:sales@example.com";
