// /docs: Swagger UI on this service's own OpenAPI document, from files the service ships.
window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", location.href).toString(),
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  // A key typed into "Authorize" lives in this page only.
  persistAuthorization: false,
  tryItOutEnabled: true,
});
