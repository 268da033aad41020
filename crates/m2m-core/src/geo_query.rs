//! Location and geo-query (Release 4, TS-0004 clause 6.3.5.8 `gmty`/`geom`/`gsf`, data type
//! m2m:geoCoordinates): the `loc` attribute of a resource is a geometry, and a discovery or
//! conditional retrieval may ask for the resources whose location lies within, contains or
//! intersects a geometry of its own.
//!
//! A geometry is its type (`typ`, m2m:geometryType) and its coordinates (`crd`), a string holding
//! GeoJSON positions (RFC 7946 clause 3.1): `[lon, lat]` or `[lon, lat, alt]`, written as decimal
//! numbers. A polygon is its outer ring (closed, four positions at least); a multi-polygon is a list
//! of such rings. The relations are those of the DE-9IM model on the plane (altitude is ignored):
//! a point at the end of a line is on its boundary, so it is not *within* the line.

use crate::error::{M2mError, M2mResult};
use geo::{Coord, Geometry, LineString, MultiLineString, MultiPoint, MultiPolygon, Point, Polygon};
use geo::{Intersects, Relate, Validation};
use serde_json::Value;

/// A reported position (a GeoJSON Point).
pub type Position = Point<f64>;

/// Longest coordinates text accepted, in bytes (a forwarded query carries it in a URL).
const MAX_COORDINATES_TEXT: usize = 16 * 1024;
/// Most positions in one geometry: a relation costs up to the product of both sides' sizes, and
/// a line crossing itself as often as it can makes a graph of that size too.
const MAX_POSITIONS: usize = 256;

/// m2m:geometryType.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryType {
    Point = 1,
    LineString = 2,
    Polygon = 3,
    MultiPoint = 4,
    MultiLineString = 5,
    MultiPolygon = 6,
}

impl GeometryType {
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => Self::Point,
            2 => Self::LineString,
            3 => Self::Polygon,
            4 => Self::MultiPoint,
            5 => Self::MultiLineString,
            6 => Self::MultiPolygon,
            _ => return None,
        })
    }
}

/// m2m:geoSpatialFunctionType: how the requested geometry relates to a resource's location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpatialFunction {
    /// The requested geometry lies within the location.
    Within = 1,
    /// The requested geometry contains the location.
    Contains = 2,
    /// The two share at least one point.
    Intersects = 3,
}

impl SpatialFunction {
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => Self::Within,
            2 => Self::Contains,
            3 => Self::Intersects,
            _ => return None,
        })
    }
}

/// A geometry read from its coordinates text.
#[derive(Clone, Debug)]
pub struct Shape(Geometry<f64>);

impl Shape {
    /// Reads the coordinates text of a geometry of type `ty`; why it is not one, in the error.
    pub fn parse(ty: GeometryType, coordinates: &str) -> Result<Shape, &'static str> {
        if coordinates.len() > MAX_COORDINATES_TEXT {
            return Err("coordinates too long");
        }
        let v: Value =
            serde_json::from_str(coordinates).map_err(|_| "coordinates are not a JSON array")?;
        let mut budget = MAX_POSITIONS;
        let geometry: Geometry<f64> = match ty {
            GeometryType::Point => Point(position(&v, &mut budget)?).into(),
            GeometryType::LineString => line(&v, &mut budget)?.into(),
            GeometryType::Polygon => Polygon::new(ring(&v, &mut budget)?, vec![]).into(),
            GeometryType::MultiPoint => MultiPoint(
                non_empty(&v)?
                    .iter()
                    .map(|p| position(p, &mut budget).map(Point))
                    .collect::<Result<_, _>>()?,
            )
            .into(),
            GeometryType::MultiLineString => MultiLineString(
                non_empty(&v)?
                    .iter()
                    .map(|l| line(l, &mut budget))
                    .collect::<Result<_, _>>()?,
            )
            .into(),
            GeometryType::MultiPolygon => MultiPolygon(
                non_empty(&v)?
                    .iter()
                    .map(|r| ring(r, &mut budget).map(|r| Polygon::new(r, vec![])))
                    .collect::<Result<_, _>>()?,
            )
            .into(),
        };
        valid_areas(&geometry)?;
        Ok(Shape(geometry))
    }

    /// Whether the point `position` lies in `self`, its boundary included: a point-in-polygon
    /// test, linear in the size of `self`.
    pub fn covers_point(&self, position: &Position) -> bool {
        self.0.intersects(position)
    }

    /// Whether `self` (the requested geometry) stands in relation `f` to `location`.
    pub fn relates(&self, f: SpatialFunction, location: &Shape) -> bool {
        let m = self.0.relate(&location.0);
        match f {
            SpatialFunction::Within => m.is_within(),
            SpatialFunction::Contains => m.is_contains(),
            SpatialFunction::Intersects => m.is_intersects(),
        }
    }
}

/// Polygons whose rings cross themselves or each other are refused: they have no inside to speak
/// of, and relating them costs as much as their crossings.
fn valid_areas(g: &Geometry<f64>) -> Result<(), &'static str> {
    match g {
        Geometry::Polygon(_) | Geometry::MultiPolygon(_) if !g.is_valid() => {
            Err("a polygon whose rings cross or touch themselves")
        }
        _ => Ok(()),
    }
}

fn non_empty(v: &Value) -> Result<&Vec<Value>, &'static str> {
    v.as_array()
        .filter(|a| !a.is_empty())
        .ok_or("expected a non-empty list")
}

/// One position: two or three decimal numbers (an integer is refused: coordinates are xs:double
/// written with a fraction, and a client sending integers has most likely swapped in another unit).
fn position(v: &Value, budget: &mut usize) -> Result<Coord<f64>, &'static str> {
    const WHAT: &str = "a position is two or three decimal numbers";
    let a = v.as_array().ok_or(WHAT)?;
    if !(2..=3).contains(&a.len()) || !a.iter().all(Value::is_f64) {
        return Err(WHAT);
    }
    let n: Vec<f64> = a.iter().filter_map(Value::as_f64).collect();
    if !n.iter().all(|x| x.is_finite()) {
        return Err(WHAT);
    }
    *budget = budget.checked_sub(1).ok_or("too many positions")?;
    Ok(Coord { x: n[0], y: n[1] })
}

fn positions(v: &Value, min: usize, budget: &mut usize) -> Result<Vec<Coord<f64>>, &'static str> {
    let a = v.as_array().ok_or("expected a list of positions")?;
    if a.len() < min {
        return Err(if min == 2 {
            "a line has two positions at least"
        } else {
            "a polygon ring has four positions at least"
        });
    }
    a.iter().map(|p| position(p, budget)).collect()
}

fn line(v: &Value, budget: &mut usize) -> Result<LineString<f64>, &'static str> {
    Ok(LineString(positions(v, 2, budget)?))
}

/// A polygon's outer ring: closed (its first and last positions equal), four positions at least.
fn ring(v: &Value, budget: &mut usize) -> Result<LineString<f64>, &'static str> {
    let p = positions(v, 4, budget)?;
    if p.first() != p.last() {
        return Err("a polygon ring ends where it starts");
    }
    Ok(LineString(p))
}

/// A GeoJSON (RFC 7946 clause 3.1) `Polygon` or `MultiPolygon` object: the area of a geofence
/// (`gta` of a `<locationPolicy>`). Rings have three positions at least (numbers of any kind);
/// a ring left open is closed; the first ring of a polygon is its outline, the others its holes.
pub fn geojson_area(v: &Value) -> Result<Shape, &'static str> {
    const WHAT: &str = "expected a GeoJSON Polygon or MultiPolygon";
    let obj = v.as_object().ok_or(WHAT)?;
    let coordinates = obj.get("coordinates").ok_or(WHAT)?;
    let mut budget = MAX_POSITIONS;
    let geometry: Geometry<f64> = match obj.get("type").and_then(Value::as_str) {
        Some("Polygon") => geojson_polygon(coordinates, &mut budget)?.into(),
        Some("MultiPolygon") => MultiPolygon(
            non_empty(coordinates)?
                .iter()
                .map(|p| geojson_polygon(p, &mut budget))
                .collect::<Result<_, _>>()?,
        )
        .into(),
        _ => return Err(WHAT),
    };
    valid_areas(&geometry)?;
    Ok(Shape(geometry))
}

fn geojson_polygon(v: &Value, budget: &mut usize) -> Result<Polygon<f64>, &'static str> {
    let mut rings = non_empty(v)?
        .iter()
        .map(|r| geojson_ring(r, budget))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter();
    let outline = rings.next().ok_or("a polygon has an outline")?;
    Ok(Polygon::new(outline, rings.collect()))
}

fn geojson_ring(v: &Value, budget: &mut usize) -> Result<LineString<f64>, &'static str> {
    let a = v
        .as_array()
        .filter(|a| a.len() >= 3)
        .ok_or("a ring has three positions at least")?;
    a.iter()
        .map(|p| geojson_position(p, budget))
        .collect::<Result<Vec<_>, _>>()
        .map(LineString)
}

fn geojson_position(v: &Value, budget: &mut usize) -> Result<Coord<f64>, &'static str> {
    const WHAT: &str = "a position is two or three numbers";
    let a = v
        .as_array()
        .filter(|a| (2..=3).contains(&a.len()))
        .ok_or(WHAT)?;
    let n: Vec<f64> = a.iter().filter_map(Value::as_f64).collect();
    if n.len() != a.len() || !n.iter().all(|x| x.is_finite()) {
        return Err(WHAT);
    }
    *budget = budget.checked_sub(1).ok_or("too many positions")?;
    Ok(Coord { x: n[0], y: n[1] })
}

/// A GeoJSON `Point`, as an object or as its JSON text: a position a device reports. Anything
/// else is no position.
pub fn geojson_point(v: &Value) -> Option<Position> {
    let parsed;
    let v = match v {
        Value::String(text) if text.len() <= MAX_COORDINATES_TEXT => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            &parsed
        }
        _ => v,
    };
    let obj = v.as_object()?;
    if obj.get("type").and_then(Value::as_str) != Some("Point") {
        return None;
    }
    let c = geojson_position(obj.get("coordinates")?, &mut 1).ok()?;
    Some(Point(c))
}

/// Checks a `loc` value (m2m:geoCoordinates): an object of exactly `typ` and `crd`, the
/// coordinates fitting the type.
pub fn check_location(v: &Value) -> Result<(), String> {
    read_location(v).map(|_| ())
}

fn read_location(v: &Value) -> Result<Shape, String> {
    let obj = v
        .as_object()
        .ok_or("expected an object of 'typ' and 'crd'")?;
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "typ" | "crd")) {
        return Err(format!("unknown element '{k}'"));
    }
    let ty = obj
        .get("typ")
        .and_then(Value::as_u64)
        .and_then(GeometryType::from_code)
        .ok_or("'typ' must be a geometry type 1..=6")?;
    let crd = obj
        .get("crd")
        .and_then(Value::as_str)
        .ok_or("'crd' must be a string of coordinates")?;
    Shape::parse(ty, crd).map_err(|e| format!("'crd': {e}"))
}

/// The pieces of a geo-query as they arrive, one request parameter at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoQueryParts {
    pub geometry_type: Option<u64>,
    pub geometry: Option<String>,
    pub function: Option<u64>,
}

impl GeoQueryParts {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The whole query once all three parameters are there; `None` while one is missing.
    pub fn complete(&self) -> M2mResult<Option<GeoQuery>> {
        let (Some(ty), Some(text), Some(f)) = (self.geometry_type, &self.geometry, self.function)
        else {
            return Ok(None);
        };
        let bad = |what: &str| M2mError::bad_request(format!("geo-query: {what}"));
        let geometry_type = GeometryType::from_code(ty).ok_or_else(|| bad("gmty must be 1..=6"))?;
        let function = SpatialFunction::from_code(f).ok_or_else(|| bad("gsf must be 1..=3"))?;
        let shape = Shape::parse(geometry_type, text).map_err(|e| bad(&format!("geom: {e}")))?;
        Ok(Some(GeoQuery {
            geometry_type,
            text: text.clone(),
            function,
            shape,
        }))
    }
}

/// A complete geo-query: a geometry and the relation a resource's location must have with it.
#[derive(Clone, Debug)]
pub struct GeoQuery {
    pub geometry_type: GeometryType,
    /// The coordinates as requested (forwarded unchanged).
    pub text: String,
    pub function: SpatialFunction,
    shape: Shape,
}

impl PartialEq for GeoQuery {
    fn eq(&self, other: &Self) -> bool {
        (self.geometry_type, &self.text, self.function)
            == (other.geometry_type, &other.text, other.function)
    }
}
impl Eq for GeoQuery {}

impl GeoQuery {
    /// Whether a resource whose `loc` is `location` is selected. A resource without a location,
    /// or with one that does not read (stored before a check), is not.
    pub fn matches(&self, location: Option<&Value>) -> bool {
        location
            .and_then(|l| read_location(l).ok())
            .is_some_and(|l| self.shape.relates(self.function, &l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(ty: GeometryType, crd: &str) -> Shape {
        Shape::parse(ty, crd).unwrap()
    }

    const SQUARE: &str = "[[0.0,0.0],[1.0,0.0],[1.0,1.0],[0.0,1.0],[0.0,0.0]]";

    #[test]
    fn locations_are_checked_by_type() {
        let ok = |typ: u64, crd: &str| check_location(&json!({"typ": typ, "crd": crd}));
        assert!(ok(1, "[1.0, 2.0]").is_ok());
        assert!(ok(1, "[1.0, 2.0, 3.5]").is_ok());
        assert!(ok(1, "[1, 2]").is_err(), "integers");
        assert!(ok(1, "[[1.0, 2.0], [3.0, 4.0]]").is_err());
        assert!(ok(1, "[1.0]").is_err());
        assert!(ok(2, "[[1.0, 2.0]]").is_err(), "a line of one position");
        assert!(ok(2, "[[1.0, 2.0], [3.0, 4.0]]").is_ok());
        assert!(ok(3, SQUARE).is_ok());
        assert!(
            ok(3, "[[1.0,2.0],[3.0,4.0],[5.0,6.0]]").is_err(),
            "not closed"
        );
        assert!(
            ok(3, "[[1.0,2.0],[3.0,4.0],[1.0,2.0]]").is_err(),
            "3 positions"
        );
        assert!(ok(4, "[[1.0, 2.0], [3.0, 4.0]]").is_ok());
        assert!(ok(4, "[]").is_err());
        assert!(ok(5, "[[[1.0,2.0],[3.0,4.0]],[[5.0,6.0],[7.0,8.0]]]").is_ok());
        assert!(ok(5, "[[1.0,2.0],[3.0,4.0]]").is_err());
        assert!(ok(6, &format!("[{SQUARE}]")).is_ok());
        assert!(ok(6, "[[1.0,2.0]]").is_err());
        assert!(ok(7, "[1.0, 2.0]").is_err(), "no type 7");
        assert!(
            ok(3, "[[0.0,0.0],[1.0,1.0],[1.0,0.0],[0.0,1.0],[0.0,0.0]]").is_err(),
            "a bow tie: its ring crosses itself"
        );
        assert!(
            ok(2, "[[0.0,0.0],[1.0,1.0],[1.0,0.0],[0.0,1.0]]").is_ok(),
            "a line may cross itself"
        );
        assert!(ok(1, "1.0").is_err());
        assert!(check_location(&json!("wrong")).is_err());
        assert!(check_location(&json!({"typ": 1, "crd": "[1.0,2.0]", "x": 1})).is_err());
        assert!(check_location(&json!({"typ": 1})).is_err());
        let many = format!("[{}[0.0,0.0]]", "[0.5,0.5],".repeat(MAX_POSITIONS));
        assert!(ok(2, &many).is_err(), "too many positions");
    }

    #[test]
    fn relations_follow_de9im() {
        use GeometryType as T;
        use SpatialFunction as F;
        let square = shape(T::Polygon, SQUARE);
        let inside = shape(T::Point, "[0.5,0.5]");
        let outside = shape(T::Point, "[2.0,2.0]");
        assert!(inside.relates(F::Within, &square));
        assert!(!outside.relates(F::Within, &square));
        assert!(!inside.relates(F::Contains, &square));
        assert!(square.relates(F::Contains, &inside));
        assert!(inside.relates(F::Intersects, &square));
        assert!(!outside.relates(F::Intersects, &square));
        let line = shape(T::LineString, "[[1.0,1.0],[2.0,2.0]]");
        assert!(
            !shape(T::Point, "[1.0,1.0]").relates(F::Within, &line),
            "an end point is on the boundary"
        );
        assert!(shape(T::Point, "[1.5,1.5]").relates(F::Within, &line));
        let half_out = shape(
            T::Polygon,
            "[[0.5,0.5],[1.5,0.5],[1.5,1.5],[0.5,1.5],[0.5,0.5]]",
        );
        assert!(!half_out.relates(F::Within, &square));
        assert!(half_out.relates(F::Intersects, &square));
        let two = shape(T::MultiPoint, "[[0.2,0.2],[0.8,0.8]]");
        assert!(two.relates(F::Within, &square));
    }

    #[test]
    fn geofence_areas_and_positions_are_geojson() {
        let area = geojson_area(&json!({"type": "Polygon",
            "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4]], [[1, 1], [2, 1], [2, 2], [1, 2]]]}))
        .expect("an open outline with a hole");
        let at = |x: f64, y: f64| {
            geojson_point(&json!({"type": "Point", "coordinates": [x, y]})).unwrap()
        };
        assert!(area.covers_point(&at(3.0, 3.0)));
        assert!(area.covers_point(&at(0.0, 2.0)), "the boundary is inside");
        assert!(!area.covers_point(&at(1.5, 1.5)), "in the hole");
        assert!(!area.covers_point(&at(5.0, 5.0)));
        let text = json!(r#"{"type": "Point", "coordinates": [3.0, 3.0]}"#);
        assert!(area.covers_point(&geojson_point(&text).expect("a point as text")));
        for not_a_point in [
            json!("x"),
            json!(5),
            json!({"type": "Point"}),
            json!({"type": "LineString", "coordinates": [[1.0, 2.0], [3.0, 4.0]]}),
        ] {
            assert!(geojson_point(&not_a_point).is_none(), "{not_a_point}");
        }
        let bow_tie = json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1]]]});
        assert!(geojson_area(&bow_tie).is_err(), "a ring crossing itself");
        for bad in [
            json!("wrong"),
            json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}),
            json!({"type": "Point", "coordinates": [1.0, 2.0]}),
            json!({"type": "Polygon"}),
            json!({"type": "Polygon", "coordinates": []}),
        ] {
            assert!(geojson_area(&bad).is_err(), "{bad}");
        }
        let multi = json!({"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1]]], [[[5, 5], [6, 5], [6, 6]]]]});
        assert!(geojson_area(&multi).unwrap().covers_point(&at(5.9, 5.1)));
    }

    #[test]
    fn a_query_needs_all_three_parts_and_a_readable_geometry() {
        let mut parts = GeoQueryParts {
            geometry_type: Some(1),
            ..Default::default()
        };
        assert!(parts.complete().unwrap().is_none());
        parts.geometry = Some("[0.5,0.5]".into());
        parts.function = Some(1);
        let q = parts.complete().unwrap().unwrap();
        let square = json!({"typ": 3, "crd": SQUARE});
        assert!(q.matches(Some(&square)));
        assert!(!q.matches(None), "no location, not selected");
        parts.geometry = Some("1.0".into());
        assert!(parts.complete().is_err());
        parts.geometry = Some("[0.5,0.5]".into());
        parts.function = Some(4);
        assert!(parts.complete().is_err());
    }
}
