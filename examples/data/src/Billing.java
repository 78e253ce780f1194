package com.example.shop;

/** Billing for the demo shop. */
public final class Billing {
    // Test account for the sandbox: NL91 ABNA 0417 1643 00
    private static final String SANDBOX_CARD = "5105 1051 0510 5100";
    private static final long MAX_AMOUNT_CENTS = 99999999L;
    private static final String VERSION = "4.2.0";

    public static String owner() {
        return "billing@example.com";
    }
}
