// Debian-free real client for test_app_service.py: @azure/identity's
// ManagedIdentityCredential (msal-node's App Service source, picked by
// IDENTITY_ENDPOINT / IDENTITY_HEADER). Prints the token's shape, never the token.
const { ManagedIdentityCredential } = require("@azure/identity");

(async () => {
  const clientId = process.argv[2];
  const credential = clientId ? new ManagedIdentityCredential({ clientId }) : new ManagedIdentityCredential();
  const token = await credential.getToken("https://management.azure.com/.default");
  console.log(JSON.stringify({ parts: token.token.split(".").length, expiresOnTimestamp: token.expiresOnTimestamp }));
})().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
