//! The derives of babylon's typed metric families. Use them through `babylon::metrics`,
//! which re-exports them beside the traits they implement and documents them with
//! examples; the code they generate names `::babylon`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::quote;
use syn::spanned::Spanned;
use syn::{parse_macro_input, Data, DeriveInput, Error, Fields, LitStr, Type};

/// `#[derive(Families)]` on a struct of `Counter`, `Gauge` and `Histogram` fields:
/// implements `babylon::metrics::Families`. See `babylon::metrics::Families`.
#[proc_macro_derive(Families, attributes(families, family))]
pub fn derive_families(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    families(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// `#[derive(LabelSet)]` on a struct whose fields are label values: implements
/// `babylon::metrics::LabelSet`, one label per field, named as the field.
#[proc_macro_derive(LabelSet)]
pub fn derive_label_set(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    label_set(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// `#[derive(LabelValue)]` on an enum of unit variants: implements
/// `babylon::metrics::LabelValue`, each variant's value its name in snake case.
#[proc_macro_derive(LabelValue)]
pub fn derive_label_value(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    label_value(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// What a Prometheus name may hold: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// What a label name may hold: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`.
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn named_fields<'a>(input: &'a DeriveInput, derive: &str) -> syn::Result<&'a syn::FieldsNamed> {
    match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => Ok(fields),
            _ => Err(Error::new(
                input.ident.span(),
                format!("#[derive({derive})] needs a struct with named fields"),
            )),
        },
        _ => Err(Error::new(
            input.ident.span(),
            format!("#[derive({derive})] needs a struct with named fields"),
        )),
    }
}

/// The doc comment's text, lines joined by spaces.
fn doc_text(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("doc")) {
        if let syn::Meta::NameValue(meta) = &attr.meta {
            if let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(text),
                ..
            }) = &meta.value
            {
                let line = text.value().trim().to_string();
                if !line.is_empty() {
                    lines.push(line);
                }
            }
        }
    }
    lines.join(" ")
}

/// The kind a field's type names by its last path segment.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn kind_of(ty: &Type) -> Option<Kind> {
    let Type::Path(path) = ty else { return None };
    match path.path.segments.last()?.ident.to_string().as_str() {
        "Counter" => Some(Kind::Counter),
        "Gauge" => Some(Kind::Gauge),
        "Histogram" => Some(Kind::Histogram),
        _ => None,
    }
}

/// `#[families(prefix = "shop")]` on the struct.
fn prefix_of(input: &DeriveInput) -> syn::Result<Option<String>> {
    let mut prefix = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("families")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("prefix") {
                let value: LitStr = meta.value()?.parse()?;
                prefix = Some(value.value());
                Ok(())
            } else {
                Err(meta.error("expected `prefix = \"…\"`"))
            }
        })?;
    }
    Ok(prefix)
}

/// `#[family(name = "…", buckets = [0.1, 1.0])]` on a field.
struct FieldOptions {
    name: Option<LitStr>,
    buckets: Option<Tokens>,
}

fn field_options(field: &syn::Field) -> syn::Result<FieldOptions> {
    let mut options = FieldOptions {
        name: None,
        buckets: None,
    };
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("family")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                options.name = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("buckets") {
                let buckets: syn::ExprArray = meta.value()?.parse()?;
                options.buckets = Some(quote!(#buckets));
                Ok(())
            } else {
                Err(meta.error("expected `name = \"…\"` or `buckets = [ … ]`"))
            }
        })?;
    }
    Ok(options)
}

fn families(input: &DeriveInput) -> syn::Result<Tokens> {
    let fields = named_fields(input, "Families")?;
    let prefix = prefix_of(input)?;
    let mut inits = Vec::new();
    for field in &fields.named {
        let ident = field.ident.as_ref().expect("named field");
        let options = field_options(field)?;
        let (name, name_span) = match &options.name {
            Some(name) => (name.value(), name.span()),
            None => {
                let field_name = ident.to_string();
                let field_name = field_name.trim_start_matches("r#");
                let name = match &prefix {
                    Some(prefix) => format!("{prefix}_{field_name}"),
                    None => field_name.to_string(),
                };
                (name, ident.span())
            }
        };
        if !valid_metric_name(&name) {
            return Err(Error::new(
                name_span,
                format!("`{name}` is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"),
            ));
        }
        let kind = kind_of(&field.ty).ok_or_else(|| {
            Error::new(
                field.ty.span(),
                "a family is a babylon::metrics::Counter, Gauge or Histogram",
            )
        })?;
        match kind {
            Kind::Counter if !name.ends_with("_total") => {
                return Err(Error::new(
                    name_span,
                    format!(
                    "counter `{name}`: a counter's name ends in `_total` (promtool check metrics)"
                ),
                ))
            }
            Kind::Gauge | Kind::Histogram if name.ends_with("_total") => {
                return Err(Error::new(
                    name_span,
                    format!(
                        "`{name}`: only a counter's name ends in `_total` (promtool check metrics)"
                    ),
                ))
            }
            _ => {}
        }
        if options.buckets.is_some() && kind != Kind::Histogram {
            return Err(Error::new(name_span, "only a histogram has buckets"));
        }
        let help = doc_text(&field.attrs);
        if help.is_empty() {
            return Err(Error::new(
                ident.span(),
                format!("document `{ident}`: its doc comment is the family's HELP text"),
            ));
        }
        let buckets = match options.buckets {
            Some(buckets) => quote!(::core::option::Option::Some(&#buckets)),
            None => quote!(::core::option::Option::None),
        };
        let ty = &field.ty;
        inits.push(quote! {
            #ident: <#ty as ::babylon::metrics::Family>::register(
                metrics,
                &::babylon::metrics::FamilyDef {
                    name: #name,
                    help: #help,
                    buckets: #buckets,
                },
            )?,
        });
    }
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::babylon::metrics::Families for #ident #ty_generics #where_clause {
            fn register(
                metrics: &::babylon::metrics::Metrics,
            ) -> ::core::result::Result<Self, ::babylon::metrics::CustomMetricError> {
                ::core::result::Result::Ok(#ident { #(#inits)* })
            }
        }
    })
}

fn label_set(input: &DeriveInput) -> syn::Result<Tokens> {
    let fields = named_fields(input, "LabelSet")?;
    if fields.named.is_empty() {
        return Err(Error::new(
            input.ident.span(),
            "a label set has at least one field; a family without labels takes `()`",
        ));
    }
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut refs = Vec::new();
    for (index, field) in fields.named.iter().enumerate() {
        let ident = field.ident.as_ref().expect("named field");
        let name = ident.to_string().trim_start_matches("r#").to_string();
        if !valid_label_name(&name) {
            return Err(Error::new(
                ident.span(),
                format!("`{name}` is not a Prometheus label name"),
            ));
        }
        let value = syn::Ident::new(&format!("value_{index}"), Span::call_site());
        names.push(name);
        values.push(quote! {
            let #value = ::babylon::metrics::LabelValue::label_value(&self.#ident);
        });
        refs.push(quote!(::core::convert::AsRef::<str>::as_ref(&#value)));
    }
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::babylon::metrics::LabelSet for #ident #ty_generics #where_clause {
            const NAMES: &'static [&'static str] = &[#(#names),*];
            fn with_values<R>(&self, f: impl ::core::ops::FnOnce(&[&str]) -> R) -> R {
                #(#values)*
                f(&[#(#refs),*])
            }
        }
    })
}

/// `CamelCase` → `camel_case`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn label_value(input: &DeriveInput) -> syn::Result<Tokens> {
    let Data::Enum(data) = &input.data else {
        return Err(Error::new(
            input.ident.span(),
            "#[derive(LabelValue)] needs an enum of unit variants",
        ));
    };
    let mut arms = Vec::new();
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            return Err(Error::new(
                variant.span(),
                "#[derive(LabelValue)] needs an enum of unit variants",
            ));
        }
        let ident = &variant.ident;
        let value = snake_case(&ident.to_string());
        arms.push(quote!(Self::#ident => #value,));
    }
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::babylon::metrics::LabelValue for #ident #ty_generics #where_clause {
            fn label_value(&self) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed(match self { #(#arms)* })
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_grammar() {
        assert!(valid_metric_name("shop_orders_total"));
        assert!(valid_metric_name("a:b_c"));
        assert!(!valid_metric_name("1orders"));
        assert!(!valid_metric_name("orders-total"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("kind"));
        assert!(!valid_label_name("__kind"));
        assert!(!valid_label_name("kind:x"));
    }

    #[test]
    fn variants_become_snake_case() {
        assert_eq!(snake_case("Book"), "book");
        assert_eq!(snake_case("PowerTool"), "power_tool");
    }
}
